//! The config write-back under the API's changes (`config::write_cameras`, what every add,
//! PATCH and delete does to the user's file), as a property: the input chooses a config file —
//! every section and camera shape, cameras interleaved with other sections, comments before
//! headers, before keys and after values — then a sequence of API changes, each made the way
//! the API makes it (`CameraPatch` from JSON whose secrets are masked as `GET` shows them,
//! a new camera, a removed camera).
//!
//! Invariants, after every change that the API would accept:
//! - the write-back succeeds, and the file loads with the start-up loader (`Config::parse`);
//! - its cameras equal the running cameras (every field, secrets included), in the same order;
//! - every other section is as it was;
//! - every comment of something still there is still there: comments of sections and of
//!   values anywhere, and a camera's or an alert rule's comment still right before its own
//!   header (a rule's comment follows the rule when rules are reordered).
//!
//! The generator only writes valid configs (a refused one is a bug of the generator, and
//! panics); a change the API would refuse (422) is skipped.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::cameras::CameraPatch;
use crate::config::{check_camera, write_cameras, CameraConfig, Config, MASKED};
use crate::fuzzing::{debug, scratch_dir, Cursor};

/// Changes written back and checked, over all inputs (the unit test checks the generator
/// reaches the write-back often, not only refused changes).
pub static CHECKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Who a comment belongs to: while it exists, the comment must be in the file.
#[derive(Debug, Clone, PartialEq)]
enum Owner {
    /// A root section (always there: write-backs never touch them).
    Section,
    /// The camera with this id; the comment is right before its `[[camera]]` header.
    Camera(String),
    /// The alert rule of this name in this camera; right before its header.
    Rule(String, String),
    /// A value of this camera at this key path (`analysis.vlm.model`).
    Value(String, Vec<String>),
}

struct Comment {
    text: String,
    owner: Owner,
    /// False once its owner went away (a later owner of the same name is another thing).
    alive: bool,
}

/// Builds a config file from the input, with its comments and their owners.
struct Writer<'a, 'b> {
    c: &'a mut Cursor<'b>,
    text: String,
    comments: Vec<Comment>,
    next: usize,
}

impl Writer<'_, '_> {
    fn pick(&mut self, n: usize) -> usize {
        self.c.u8() as usize % n
    }

    /// A comment line owned by `owner`, if the input says so (always, if `must`).
    fn comment_line(&mut self, owner: Owner, must: bool) {
        if must || self.c.bool() {
            let text = self.comment(owner);
            self.text.push_str(&format!("# {text}\n"));
        }
    }

    fn comment(&mut self, owner: Owner) -> String {
        self.next += 1;
        let text = format!("note-{} {:?}", self.next, owner).replace(['"', '\n'], "'");
        self.comments.push(Comment {
            text: text.clone(),
            owner,
            alive: true,
        });
        text
    }

    /// `key = value`, with a comment after it or on the line before, if the input says so.
    fn value(&mut self, camera: &str, path: &[&str], key: &str, value: &str) {
        self.dotted_value(camera, path, key, key, value)
    }

    /// `written = value` for the key `key` under `path` (`written` may be a dotted key).
    fn dotted_value(&mut self, camera: &str, path: &[&str], key: &str, written: &str, value: &str) {
        let mut full: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        full.push(key.to_string());
        let owner = Owner::Value(camera.to_string(), full);
        match self.pick(4) {
            0 => {
                let t = self.comment(owner);
                self.text.push_str(&format!("{written} = {value} # {t}\n"));
            }
            1 => {
                self.comment_line(owner, true);
                self.text.push_str(&format!("{written} = {value}\n"));
            }
            _ => self.text.push_str(&format!("{written} = {value}\n")),
        }
    }

    fn section(&mut self) {
        let body = match self.pick(5) {
            0 => "[server]\nlisten = \"127.0.0.1:8080\"\n",
            1 => "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n",
            2 => "[recording]\npath = \"recordings\"\nkeep = \"7d\"\n",
            3 => "[storage]\nkeep_days = 3\n",
            _ => "[mse]\nbatch = \"80ms\"\n",
        };
        // One of each at most: a second [server] would be a syntax error.
        let header = body.lines().next().unwrap_or_default();
        if self.text.lines().any(|l| l == header) {
            return;
        }
        self.text.push('\n');
        self.comment_line(Owner::Section, true);
        self.text.push_str(body);
    }

    fn camera(&mut self, id: &str) {
        self.text.push('\n');
        self.comment_line(Owner::Camera(id.to_string()), true);
        self.text.push_str("[[camera]]\n");
        self.value(id, &[], "id", &format!("{id:?}"));
        let kind = self.pick(3);
        let source = match kind {
            0 => "testsrc://?size=320x240&fps=5",
            1 => "rtsp://user:pa55@127.0.0.1:8554/x",
            _ => "publish:",
        };
        self.value(id, &[], "source", &format!("{source:?}"));
        if self.c.bool() {
            self.value(id, &[], "on_demand", "true");
            if self.c.bool() {
                self.value(id, &[], "idle_timeout", "\"15s\"");
            }
        }
        if kind == 1 {
            if self.c.bool() {
                self.value(id, &[], "transport", "\"udp\"");
            }
            if self.c.bool() {
                self.value(id, &[], "timeout", "\"5s\"");
            }
            if self.c.bool() {
                self.value(id, &[], "user_agent", "\"cam-agent/1\"");
            }
        }
        if kind == 2 && self.c.bool() {
            self.value(id, &[], "publish_key", "\"key-secret-1\"");
        }
        let record_table = match self.pick(4) {
            0 => {
                self.value(id, &[], "record", "true");
                false
            }
            1 => {
                self.value(id, &[], "record", "{ keep = \"30d\" }");
                false
            }
            2 => true,
            _ => false,
        };
        let motion = self.pick(3);
        if motion == 1 {
            // Dotted keys: a table that has no header of its own.
            self.dotted_value(
                id,
                &["analysis", "motion"],
                "fps",
                "analysis.motion.fps",
                "2",
            );
        }
        if record_table {
            let owner = Owner::Value(id.to_string(), vec!["record".into(), "keep".into()]);
            self.comment_line(owner, false);
            self.text.push_str("[camera.record]\n");
            self.value(id, &["record"], "keep", "\"14d\"");
        }
        if motion == 2 {
            let owner = Owner::Value(id.to_string(), vec!["analysis".into(), "motion".into()]);
            self.comment_line(owner, false);
            self.text.push_str("[camera.analysis.motion]\n");
            self.value(id, &["analysis", "motion"], "sensitivity", "0.5");
        }
        let vlm = self.c.bool();
        if vlm {
            self.text.push_str("[camera.analysis.vlm]\n");
            let p = ["analysis", "vlm"];
            self.value(id, &p, "endpoint", "\"http://127.0.0.1:11434/v1\"");
            self.value(id, &p, "model", "\"m1\"");
            if self.c.bool() {
                self.value(id, &p, "api_key", "\"sk-secret-1\"");
            }
            self.value(id, &p, "interval", "\"5s\"");
            for i in 0..self.pick(4) {
                let name = format!("rule{i}");
                self.comment_line(Owner::Rule(id.to_string(), name.clone()), true);
                self.text.push_str("[[camera.analysis.alert]]\n");
                self.text.push_str(&format!(
                    "name = {name:?}\nquestion = \"Is there a person {i}?\"\ninterval = \"3s\"\n"
                ));
            }
        }
        if self.c.bool() {
            self.text.push_str("[camera.analysis.summary]\n");
            let p = ["analysis", "summary"];
            self.value(id, &p, "every", "\"1h\"");
            self.value(id, &p, "endpoint", "\"http://127.0.0.1:11434/v1\"");
            self.value(id, &p, "model", "\"m2\"");
            if self.c.bool() {
                self.value(id, &p, "api_key", "\"sk-secret-2\"");
            }
        }
        if self.c.bool() {
            self.text.push_str("[camera.analysis.asr]\n");
            let p = ["analysis", "asr"];
            self.value(id, &p, "endpoint", "\"http://127.0.0.1:9000/v1\"");
            self.value(id, &p, "model", "\"whisper-1\"");
        }
    }
}

/// Where the files are written: a directory of this process in `/dev/shm` (or the temp dir),
/// a file per thread (the mutation runs of several targets may run at once).
fn scratch() -> PathBuf {
    let name = format!("{:?}.toml", std::thread::current().id()).replace(['(', ')'], "");
    scratch_dir("write-back").join(name)
}

/// The analysis settings as `GET /api/cameras/{id}` shows them: secrets masked.
fn shown(camera: &CameraConfig) -> Value {
    let mut v = camera.analysis.as_ref().map_or(json!({}), |a| {
        serde_json::to_value(a).expect("analysis as JSON")
    });
    fn mask(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    if crate::config::is_secret_key(k) && x.is_string() {
                        *x = json!(MASKED);
                    } else {
                        mask(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(mask),
            _ => {}
        }
    }
    mask(&mut v);
    v
}

/// A change the UI could send for `camera`, chosen by the input.
fn patch(c: &mut Cursor, camera: &CameraConfig, rule_names: &mut usize) -> Value {
    match c.u8() % 12 {
        0 => {
            let sources = [
                "testsrc://",
                "publish:",
                "rtsp://user:pa55@127.0.0.1:8554/y",
            ];
            json!({ "source": sources[c.u8() as usize % 3] })
        }
        1 => json!({"on_demand": c.bool()}),
        2 => json!({"idle_timeout": if c.bool() { json!("20s") } else { Value::Null }}),
        3 => json!({"user_agent": if c.bool() { json!("cam-agent/2") } else { Value::Null }}),
        4 => {
            let records = [
                json!(true),
                json!(false),
                json!({"keep": "10d"}),
                Value::Null,
            ];
            json!({ "record": records[c.u8() as usize % 4].clone() })
        }
        5 => json!({"transport": if c.bool() { json!("tcp") } else { Value::Null }}),
        _ => {
            let mut a = shown(camera);
            let map = a.as_object_mut().expect("analysis is a table");
            match c.u8() % 10 {
                0 => {
                    map.insert("motion".into(), json!({}));
                }
                1 => {
                    map.remove("motion");
                }
                2 => {
                    map.insert(
                        "vlm".into(),
                        json!({"endpoint": "http://127.0.0.1:11434/v1", "model": "m3", "api_key": "sk-new"}),
                    );
                }
                3 => {
                    map.remove("vlm");
                    map.remove("alert");
                }
                4 => {
                    if let Some(vlm) = map.get_mut("vlm").and_then(Value::as_object_mut) {
                        vlm.insert("model".into(), json!(format!("m{}", c.u8())));
                        if c.bool() {
                            // A new endpoint with the key still masked: the API refuses it.
                            vlm.insert("endpoint".into(), json!("http://127.0.0.2:11434/v1"));
                        }
                    }
                }
                5 if map.contains_key("vlm") => {
                    *rule_names += 1;
                    let rule = json!({"name": format!("new{rule_names}"), "question": "Is the door open?"});
                    let list = map.entry("alert").or_insert(json!([]));
                    if let Some(list) = list.as_array_mut() {
                        let at = c.u8() as usize % (list.len() + 1);
                        list.insert(at, rule);
                    }
                }
                6 => {
                    if let Some(list) = map.get_mut("alert").and_then(Value::as_array_mut) {
                        if !list.is_empty() {
                            let at = c.u8() as usize % list.len();
                            list.remove(at);
                        }
                    }
                }
                7 => {
                    if let Some(list) = map.get_mut("alert").and_then(Value::as_array_mut) {
                        if c.bool() {
                            list.reverse();
                        } else if !list.is_empty() {
                            list.rotate_left(1);
                        }
                    }
                }
                8 => {
                    if let Some(rule) = map
                        .get_mut("alert")
                        .and_then(Value::as_array_mut)
                        .and_then(|l| l.first_mut())
                    {
                        rule["question"] = json!(format!("Is it raining {}?", c.u8()));
                    }
                }
                _ => {
                    if map.remove("summary").is_none() {
                        map.insert(
                            "summary".into(),
                            json!({"every": "2h", "prompt": "Summarise"}),
                        );
                    }
                }
            }
            if c.u8() % 16 == 0 {
                json!({"analysis": Value::Null})
            } else {
                json!({ "analysis": a })
            }
        }
    }
}

/// The value at `path` in the camera's settings, if there is one.
fn has_value(camera: &CameraConfig, path: &[String]) -> bool {
    let Ok(toml::Value::Table(t)) = toml::Value::try_from(camera) else {
        return false;
    };
    let mut at = toml::Value::Table(t);
    for key in path {
        match at.get(key) {
            Some(v) => at = v.clone(),
            None => return false,
        }
    }
    true
}

fn exists(owner: &Owner, cameras: &[CameraConfig]) -> bool {
    let find = |id: &str| cameras.iter().find(|c| c.id == id);
    match owner {
        Owner::Section => true,
        Owner::Camera(id) => find(id).is_some(),
        Owner::Rule(id, name) => find(id).is_some_and(|c| {
            c.analysis
                .as_ref()
                .and_then(|a| a.get("alert"))
                .and_then(toml::Value::as_array)
                .is_some_and(|l| {
                    l.iter()
                        .any(|r| r.get("name").and_then(toml::Value::as_str) == Some(name))
                })
        }),
        Owner::Value(id, path) => find(id).is_some_and(|c| has_value(c, path)),
    }
}

/// The comment text right before the header of the table that `owner` names.
fn prefix_of(doc: &toml_edit::DocumentMut, owner: &Owner) -> Option<String> {
    let cameras = doc.get("camera")?.as_array_of_tables()?;
    let camera = |id: &str| {
        cameras
            .iter()
            .find(|t| t.get("id").and_then(toml_edit::Item::as_str) == Some(id))
    };
    let prefix = |t: &toml_edit::Table| {
        t.decor()
            .prefix()
            .and_then(|p| p.as_str())
            .unwrap_or_default()
            .to_string()
    };
    match owner {
        Owner::Camera(id) => Some(prefix(camera(id)?)),
        Owner::Rule(id, name) => {
            let rules = camera(id)?
                .get("analysis")?
                .get("alert")?
                .as_array_of_tables()?;
            let rule = rules
                .iter()
                .find(|t| t.get("name").and_then(toml_edit::Item::as_str) == Some(name))?;
            Some(prefix(rule))
        }
        _ => None,
    }
}

fn others(text: &str) -> toml::Table {
    let mut t: toml::Table = toml::from_str(text).expect("TOML");
    t.remove("camera");
    t
}

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let mut w = Writer {
        c: &mut c,
        text: String::new(),
        comments: Vec::new(),
        next: 0,
    };
    w.comment_line(Owner::Section, true);
    let count = 1 + w.pick(4);
    for i in 0..count {
        if w.c.bool() {
            w.section();
        }
        w.camera(&format!("cam{i}"));
    }
    if w.c.bool() {
        w.section();
    }
    let Writer {
        text, mut comments, ..
    } = w;
    if debug() {
        eprintln!("--- generated ---\n{text}");
    }
    let config = Config::parse(&text)
        .unwrap_or_else(|p| panic!("the generator wrote a config that is refused: {p:#?}\n{text}"));
    let sections = others(&text);
    let path = scratch();
    std::fs::write(&path, &text).expect("write scratch config");
    let mut running = config.camera.clone();
    let mut rule_names = 0;
    let mut next_camera = count;

    for step in 0..12 {
        if c.is_empty() {
            break;
        }
        let what;
        match c.u8() % 8 {
            0 if running.len() < 6 => {
                let id = format!("cam{next_camera}");
                next_camera += 1;
                let source = ["testsrc://", "publish:"][c.u8() as usize % 2];
                running.push(CameraConfig::with_source(&id, source));
                what = format!("add {id}");
            }
            1 if running.len() > 1 => {
                let at = c.u8() as usize % running.len();
                what = format!("remove {}", running[at].id);
                running.remove(at);
            }
            _ if !running.is_empty() => {
                let at = c.u8() as usize % running.len();
                let body = patch(&mut c, &running[at], &mut rule_names);
                what = format!("PATCH {} {body}", running[at].id);
                let Ok(p) = serde_json::from_value::<CameraPatch>(body) else {
                    continue;
                };
                let Ok(new) = p.apply(&running[at]) else {
                    continue; // 422: a masked key beside a new endpoint
                };
                if !check_camera(&new, false).is_empty() {
                    continue; // 422
                }
                running[at] = new;
            }
            _ => continue,
        }
        let written = write_cameras(&path, &running).unwrap_or_else(|e| {
            panic!(
                "step {step} ({what}): write-back refused: {e}\n--- file before ---\n{}",
                std::fs::read_to_string(&path).unwrap_or_default()
            )
        });
        let on_disk = std::fs::read_to_string(&path).expect("read back");
        assert_eq!(
            written, on_disk,
            "step {step}: the text returned is the file"
        );
        if debug() {
            eprintln!("--- step {step}: {what} ---\n{on_disk}");
        }
        let back = Config::parse(&on_disk).unwrap_or_else(|p| {
            panic!("step {step} ({what}): the file does not load: {p:#?}\n{on_disk}")
        });
        assert_eq!(
            back.camera, running,
            "step {step} ({what}): the file's cameras are not the running ones\n{on_disk}"
        );
        assert_eq!(
            others(&on_disk),
            sections,
            "step {step} ({what}): another section changed\n{on_disk}"
        );
        CHECKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let doc: toml_edit::DocumentMut = on_disk.parse().expect("TOML");
        for comment in comments.iter_mut() {
            comment.alive &= exists(&comment.owner, &running);
            if !comment.alive {
                continue;
            }
            assert!(
                on_disk.contains(&comment.text),
                "step {step} ({what}): the comment {:?} is gone\n{on_disk}",
                comment.text
            );
            if let Some(prefix) = prefix_of(&doc, &comment.owner) {
                assert!(
                    prefix.contains(&comment.text),
                    "step {step} ({what}): {:?} is no longer right before its header\n{on_disk}",
                    comment.text
                );
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Removes this process's scratch directory (the unit test's clean-up).
#[cfg(test)]
pub(super) fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch_dir("write-back"));
}
