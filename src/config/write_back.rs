//! Writing the cameras back into the config file when they change through the API.
//!
//! The file is the user's: its comments, its layout and every other section must survive, and
//! what is written must be exactly what livelens runs, or a restart loses the set-up. So a
//! write-back is three steps, and the file is touched only by the last:
//! 1. [`render`] (sans-IO): the file's text with its `[[camera]]` tables changed in place to
//!    hold the cameras. Each value is changed where it is, keeping the comments around it; list
//!    entries (alert rules) are matched by name, so a rule keeps its comments when the rules are
//!    reordered; then every table is given its place (`place_tables`);
//! 2. [`verify`] (sans-IO): the new text read by the loader start-up uses ([`Config::parse`])
//!    must yield exactly those cameras, every field and secret included, and every other section
//!    exactly as it was; otherwise nothing is written, and the error names the section;
//! 3. [`replace_file`]: atomically, keeping mode and owner.
//!
//! A refusal is a [`Problem`] whose place is the section (`camera "front".analysis.alert[1]`,
//! `mse.batch`, `line 3`): nothing was written.
//!
//! toml_edit renders the tables of a document ordered by their positions, and a table without
//! one after the table visited before it; a table copied from another document keeps that
//! document's positions. That is how an alert list once went above `[server]`. Rather than
//! patching positions where a table is made, `place_tables` numbers every table of the
//! document, so no table can be rendered outside the camera (or section) it belongs to.

use std::path::{Path, PathBuf};

use toml_edit::{ArrayOfTables, DocumentMut, InlineTable, Item, Table};

use super::{problem, CameraConfig, Config, Problem};

/// Writes the camera list back into the config file at `path` (a missing file is an empty
/// one), verified first: on any error the file is left as it was. Cameras already in the file
/// keep their places; new ones follow, in the order given. Returns the text written.
pub fn write_cameras(path: &Path, cameras: &[CameraConfig]) -> Result<String, Problem> {
    // The messages name no path: they reach API clients.
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(problem("", format!("cannot read the config file: {e}"))),
    };
    let order = camera_order(&text);
    let mut cameras: Vec<&CameraConfig> = cameras.iter().collect();
    cameras.sort_by_key(|c| {
        order
            .iter()
            .position(|id| *id == c.id)
            .unwrap_or(usize::MAX)
    });
    let cameras: Vec<CameraConfig> = cameras.into_iter().cloned().collect();
    let new = render(&text, &cameras)?;
    verify(&text, &new, &cameras)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| problem("", format!("cannot make the config file's folder: {e}")))?;
    }
    replace_file(path, new.as_bytes())
        .map_err(|e| problem("", format!("cannot write the config file: {e}")))?;
    Ok(new)
}

/// The ids of the cameras in `text`, in the file's order (an unreadable file has none).
pub fn camera_order(text: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<DocumentMut>() else {
        return Vec::new();
    };
    match doc.get("camera") {
        Some(Item::ArrayOfTables(a)) => a
            .iter()
            .filter_map(|t| t.get("id").and_then(Item::as_str).map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// `text` with its cameras made to be `cameras`, in that order; everything else as it was.
pub fn render(text: &str, cameras: &[CameraConfig]) -> Result<String, Problem> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let place = e
            .span()
            .map(|s| format!("line {}", line_of(text, s.start)))
            .unwrap_or_default();
        problem(
            place,
            format!(
                "the config file is not valid TOML ({}); fix it by hand, nothing was changed",
                e.message().trim()
            ),
        )
    })?;
    let old: Vec<Table> = match doc.get("camera") {
        Some(Item::ArrayOfTables(a)) => a.iter().cloned().collect(),
        _ => Vec::new(),
    };
    let mut tables = ArrayOfTables::new();
    for camera in cameras {
        // The camera's own table, so its comments, layout and extra keys survive.
        let mut table = old
            .iter()
            .find(|t| t.get("id").and_then(Item::as_str) == Some(camera.id.as_str()))
            .cloned()
            .unwrap_or_default();
        let wanted = camera_values(camera, &table)
            .map_err(|m| problem(format!("camera {:?}", camera.id), m))?;
        merge_table(&mut table, &wanted, true);
        tables.push(table);
    }
    // A removed camera takes its own comments with it, but not the ones above them that a
    // blank line sets apart (the file's opening comment, a heading for a group of sections):
    // those go to whatever now follows.
    let kept: Vec<(isize, String)> = old
        .iter()
        .filter(|t| {
            let id = t.get("id").and_then(Item::as_str);
            !cameras.iter().any(|c| Some(c.id.as_str()) == id)
        })
        .filter_map(|t| Some((t.position()?, detached_comments(t)?)))
        .collect();
    if cameras.is_empty() {
        doc.remove("camera");
    } else {
        doc["camera"] = Item::ArrayOfTables(tables);
    }
    for (position, text) in kept {
        give_to_next(&mut doc, position, &text);
    }
    place_tables(&mut doc);
    Ok(doc.to_string())
}

/// The comments before `table`'s header that a blank line sets apart from it.
fn detached_comments(table: &Table) -> Option<String> {
    let prefix = table.decor().prefix()?.as_str()?;
    let end = prefix.rfind("\n\n")? + 2;
    let detached = &prefix[..end];
    detached.contains('#').then(|| detached.to_string())
}

/// Puts `text` before the first root table or camera after `position` (or at the end).
fn give_to_next(doc: &mut DocumentMut, position: isize, text: &str) {
    let next = units(doc)
        .into_iter()
        .filter_map(|(p, path)| Some((p.filter(|&p| p > position)?, path)))
        .min_by_key(|(p, _)| *p);
    match next.and_then(|(_, path)| table_at(doc.as_table_mut(), &path)) {
        Some(table) => {
            let own = table
                .decor()
                .prefix()
                .and_then(|p| p.as_str())
                .unwrap_or("\n")
                .to_string();
            table.decor_mut().set_prefix(format!("{text}{own}"));
        }
        None => {
            let trailing = doc.trailing().as_str().unwrap_or_default().to_string();
            doc.set_trailing(format!("{trailing}\n{text}"));
        }
    }
}

/// Checks that `new` (what [`render`] made of `old`) loads as start-up would load it, holds
/// exactly `cameras`, and changes nothing else.
pub fn verify(old: &str, new: &str, cameras: &[CameraConfig]) -> Result<(), Problem> {
    let parsed = Config::parse(new).map_err(|problems| {
        let first = &problems[0];
        problem(
            first.place.clone(),
            format!(
                "the file would not load after this change ({}{}); nothing was changed",
                first.message,
                if problems.len() > 1 {
                    format!(", and {} more problem(s)", problems.len() - 1)
                } else {
                    String::new()
                }
            ),
        )
    })?;
    if parsed.camera.len() != cameras.len() {
        return Err(problem(
            "camera",
            format!(
                "would read back {} camera(s) instead of {}; nothing was changed",
                parsed.camera.len(),
                cameras.len()
            ),
        ));
    }
    for (got, want) in parsed.camera.iter().zip(cameras) {
        if got != want {
            let place = match (camera_table(got), camera_table(want)) {
                (Ok(g), Ok(w)) => first_difference(&g, &w).unwrap_or_default(),
                _ => String::new(),
            };
            return Err(problem(
                format!("camera {:?}{}", want.id, dotted(&place)),
                "would not read back as set; nothing was changed",
            ));
        }
    }
    let others = |text: &str| -> Option<toml::Table> {
        let mut t: toml::Table = toml::from_str(text).ok()?;
        t.remove("camera");
        Some(t)
    };
    if let (Some(before), Some(after)) = (others(old), others(new)) {
        if let Some(place) = first_difference(&after, &before) {
            return Err(problem(
                place,
                "would change although only cameras were written; nothing was changed",
            ));
        }
    }
    Ok(())
}

fn dotted(place: &str) -> String {
    if place.is_empty() {
        String::new()
    } else {
        format!(".{place}")
    }
}

fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A camera's settings as TOML values, as the loader reads them back.
fn camera_table(camera: &CameraConfig) -> Result<toml::Table, String> {
    match toml::Value::try_from(camera) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err("is not a table".into()),
        Err(e) => Err(format!("cannot be written as TOML: {e}")),
    }
}

/// What the camera's table must hold: its settings, with `on_demand = false` left out unless
/// the file already says it (it is the default).
fn camera_values(camera: &CameraConfig, old: &Table) -> Result<toml::Table, String> {
    let mut t = camera_table(camera)?;
    if !camera.on_demand && !old.contains_key("on_demand") {
        t.remove("on_demand");
    }
    Ok(t)
}

/// The first key path (`analysis.alert[1].question`) where `a` and `b` differ.
fn first_difference(a: &toml::Table, b: &toml::Table) -> Option<String> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => return Some(format!("{key}{}", value_difference(x, y))),
            _ => return Some(key.clone()),
        }
    }
    None
}

fn value_difference(a: &toml::Value, b: &toml::Value) -> String {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => first_difference(x, y)
            .map(|p| dotted(&p))
            .unwrap_or_default(),
        (toml::Value::Array(x), toml::Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find(|(_, (p, q))| p != q)
            .map(|(i, (p, q))| format!("[{i}]{}", value_difference(p, q)))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Makes `table` hold exactly `new`: values that did not change are kept as written (with
/// their comments), changed ones are replaced in place, missing ones removed, new ones added
/// at the end. `camera_level`: `table` is a camera's own table, whose new small tables
/// (`record = { keep = "30d" }`) are written inline.
fn merge_table(table: &mut Table, new: &toml::Table, camera_level: bool) {
    let gone: Vec<String> = table
        .iter()
        .map(|(k, _)| k.to_string())
        .filter(|k| !new.contains_key(k))
        .collect();
    for key in gone {
        table.remove(&key);
    }
    for (key, value) in new {
        match table.get_mut(key) {
            Some(item) => merge_item(item, value),
            None => {
                table.insert(key, new_item(value, camera_level));
            }
        }
    }
    // A table left with no keys still means something (`[camera.analysis.motion]` switches
    // motion on with its defaults): it must keep its header.
    if table.is_empty() {
        table.set_implicit(false);
        table.set_dotted(false);
    }
}

fn merge_item(item: &mut Item, new: &toml::Value) {
    match (&mut *item, new) {
        (Item::Table(t), toml::Value::Table(n)) => merge_table(t, n, false),
        (Item::ArrayOfTables(a), toml::Value::Array(n)) if all_tables(n) => {
            merge_array_of_tables(a, n)
        }
        (Item::Value(v), _) => {
            if from_edit_value(v).as_ref() != Some(new) {
                let decor = v.decor().clone();
                let mut fresh = to_edit_value(new);
                *fresh.decor_mut() = decor;
                *v = fresh;
            }
        }
        _ => *item = new_item(new, false),
    }
}

/// An array of tables (`[[camera.analysis.alert]]`) made to hold `new`: each entry reuses the
/// old entry of the same `name` (or `id`), else the old entry at its place if no other entry
/// claims it, so comments follow a rule that moves or is renamed.
fn merge_array_of_tables(array: &mut ArrayOfTables, new: &[toml::Value]) {
    let old: Vec<Table> = array.iter().cloned().collect();
    let mut used = vec![false; old.len()];
    let identity = |t: &toml::Table| {
        ["name", "id"]
            .iter()
            .find_map(|k| t.get(*k).and_then(toml::Value::as_str).map(str::to_string))
    };
    let old_identity = |t: &Table| {
        ["name", "id"]
            .iter()
            .find_map(|k| t.get(k).and_then(Item::as_str).map(str::to_string))
    };
    let new_ids: Vec<Option<String>> = new
        .iter()
        .map(|v| v.as_table().and_then(identity))
        .collect();
    let mut out = ArrayOfTables::new();
    for (i, value) in new.iter().enumerate() {
        let Some(wanted) = value.as_table() else {
            continue;
        };
        let by_name = new_ids[i].as_ref().and_then(|id| {
            (0..old.len()).find(|&j| !used[j] && old_identity(&old[j]).as_ref() == Some(id))
        });
        // The entry at the same place, unless it belongs to another entry of the new list.
        let by_place = || {
            (i < old.len()
                && !used[i]
                && !old_identity(&old[i]).is_some_and(|id| new_ids.contains(&Some(id))))
            .then_some(i)
        };
        let mut table = match by_name.or_else(by_place) {
            Some(j) => {
                used[j] = true;
                old[j].clone()
            }
            None => Table::new(),
        };
        merge_table(&mut table, wanted, false);
        out.push(table);
    }
    *array = out;
}

fn all_tables(values: &[toml::Value]) -> bool {
    !values.is_empty() && values.iter().all(toml::Value::is_table)
}

/// A new item for `value`: tables as `[headers]` (inline at a camera's level when they hold
/// only values), non-empty lists of tables as `[[headers]]`, anything else as a value.
fn new_item(value: &toml::Value, camera_level: bool) -> Item {
    match value {
        toml::Value::Table(t) => {
            let nested = t
                .values()
                .any(|v| v.is_table() || v.as_array().is_some_and(|a| all_tables(a)));
            if camera_level && !nested {
                return Item::Value(to_edit_value(value));
            }
            let mut table = Table::new();
            // Only sub-tables: their headers say it all.
            table.set_implicit(true);
            merge_table(&mut table, t, false);
            Item::Table(table)
        }
        toml::Value::Array(a) if all_tables(a) => {
            let mut array = ArrayOfTables::new();
            for v in a {
                let mut table = Table::new();
                if let Some(t) = v.as_table() {
                    merge_table(&mut table, t, false);
                }
                array.push(table);
            }
            Item::ArrayOfTables(array)
        }
        _ => Item::Value(to_edit_value(value)),
    }
}

fn to_edit_value(value: &toml::Value) -> toml_edit::Value {
    match value {
        toml::Value::String(s) => s.as_str().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => (*f).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => match d.to_string().parse::<toml_edit::Datetime>() {
            Ok(d) => d.into(),
            Err(_) => d.to_string().into(),
        },
        toml::Value::Array(a) => {
            let mut array: toml_edit::Array = a.iter().map(to_edit_value).collect();
            array.fmt();
            array.into()
        }
        toml::Value::Table(t) => {
            let mut table = InlineTable::new();
            for (k, v) in t {
                table.insert(k, to_edit_value(v));
            }
            table.fmt();
            table.into()
        }
    }
}

fn from_edit_value(value: &toml_edit::Value) -> Option<toml::Value> {
    Some(match value {
        toml_edit::Value::String(s) => toml::Value::String(s.value().clone()),
        toml_edit::Value::Integer(i) => toml::Value::Integer(*i.value()),
        toml_edit::Value::Float(f) => toml::Value::Float(*f.value()),
        toml_edit::Value::Boolean(b) => toml::Value::Boolean(*b.value()),
        toml_edit::Value::Datetime(d) => toml::Value::Datetime(d.value().to_string().parse().ok()?),
        toml_edit::Value::Array(a) => {
            toml::Value::Array(a.iter().map(from_edit_value).collect::<Option<_>>()?)
        }
        toml_edit::Value::InlineTable(t) => toml::Value::Table(
            t.iter()
                .map(|(k, v)| Some((k.to_string(), from_edit_value(v)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

/// One step of the way from the document's root to a table.
#[derive(Clone)]
enum Step {
    Key(String),
    Entry(String, usize),
}

/// Numbers every table of `doc` so that each is rendered inside what it belongs to: the
/// sections and camera entries ("units") keep their order in the file (a new one comes right
/// after the one before it), and each unit's own tables follow its header, depth first.
fn place_tables(doc: &mut DocumentMut) {
    // Sorted by their position in the file, a new one (no position) just after the unit
    // before it.
    let mut last = (0isize, 0usize);
    let mut units: Vec<((isize, usize), Vec<Step>)> = units(doc)
        .into_iter()
        .map(|(position, path)| {
            last = match position {
                Some(p) => (p, 0),
                None => (last.0, last.1 + 1),
            };
            (last, path)
        })
        .collect();
    units.sort_by_key(|(order, _)| *order);
    let mut position: isize = 1;
    for (_, path) in units {
        if let Some(table) = table_at(doc.as_table_mut(), &path) {
            number_depth_first(table, &mut position);
        }
    }
}

/// The document's units, in the order of its root table: each root table and each entry of a
/// root array of tables, with its position in the file (none if it is new) and its path.
fn units(doc: &DocumentMut) -> Vec<(Option<isize>, Vec<Step>)> {
    let mut units = Vec::new();
    for (key, item) in doc.as_table().iter() {
        match item {
            Item::Table(t) => units.push((t.position(), vec![Step::Key(key.to_string())])),
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    units.push((t.position(), vec![Step::Entry(key.to_string(), i)]));
                }
            }
            _ => {}
        }
    }
    units
}

fn table_at<'a>(root: &'a mut Table, path: &[Step]) -> Option<&'a mut Table> {
    let mut table = root;
    for step in path {
        table = match step {
            Step::Key(k) => table.get_mut(k)?.as_table_mut()?,
            Step::Entry(k, i) => table.get_mut(k)?.as_array_of_tables_mut()?.get_mut(*i)?,
        };
    }
    Some(table)
}

fn number_depth_first(table: &mut Table, position: &mut isize) {
    table.set_position(Some(*position));
    *position += 1;
    for (_, item) in table.iter_mut() {
        match item {
            Item::Table(t) => number_depth_first(t, position),
            Item::ArrayOfTables(a) => {
                for t in a.iter_mut() {
                    number_depth_first(t, position);
                }
            }
            _ => {}
        }
    }
}

/// Replaces the file at `path` (or, for a symlink, the file it points to) with `contents`,
/// atomically: a temporary file in the same folder with the old file's mode and owner, synced,
/// renamed over it, and the folder synced so the rename survives a power cut.
pub fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let target = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e),
    };
    let old = std::fs::metadata(&target).ok();
    let tmp = temp_path(&target);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        if let Some(old) = &old {
            file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))?;
            // Only root may give a file away; anyone else writes their own file, as before.
            let _ = std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()));
        }
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &target)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let folder = target.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(folder.unwrap_or(Path::new(".")))?.sync_all()
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# top
[server]
listen = "127.0.0.1:8080"

[[camera]]
id = "a"
source = "testsrc://"

[[camera]]
id = "b"
source = "testsrc://"
# b's model
[camera.analysis.vlm]
endpoint = "http://127.0.0.1:11434/v1"
model = "m" # the model
# rule one
[[camera.analysis.alert]]
name = "one"
question = "Is one there?"

# the end
[mqtt]
url = "mqtt://127.0.0.1:1883"
"#;

    fn cameras(text: &str) -> Vec<CameraConfig> {
        Config::parse(text).unwrap().camera
    }

    /// The shape that once moved a camera's `[[camera.analysis.alert]]` and `vlm` tables under
    /// `[server]`: any write-back of a file that holds alert rules.
    #[test]
    fn alert_rules_and_model_stay_under_their_camera() {
        let mut list = cameras(FILE);
        // A later change to another camera, then one to the rules themselves.
        list[0].on_demand = true;
        let text = render(FILE, &list).unwrap();
        verify(FILE, &text, &list).unwrap();
        let mut rules: toml::Table = toml::from_str(
            "[vlm]\nendpoint = \"http://127.0.0.1:11434/v1\"\nmodel = \"m\"\n\
             [[alert]]\nname = \"two\"\nquestion = \"Is two there?\"\n\
             [[alert]]\nname = \"one\"\nquestion = \"Is one there?\"\n",
        )
        .unwrap();
        list[1].analysis = Some(rules.clone());
        let again = render(&text, &list).unwrap();
        verify(&text, &again, &list).unwrap();
        assert_eq!(Config::parse(&again).unwrap().camera, list, "{again}");
        let server = again.find("[server]").unwrap();
        let b = again.find("id = \"b\"").unwrap();
        let mqtt = again.find("[mqtt]").unwrap();
        for header in ["[camera.analysis.vlm]", "[[camera.analysis.alert]]"] {
            let at = again.find(header).unwrap();
            assert!(
                server < b && b < at && at < mqtt,
                "{header} misplaced:\n{again}"
            );
        }
        // Comments stay: the model's, and rule one's before rule one (now second).
        assert!(again.contains("model = \"m\" # the model"), "{again}");
        let one = again.find("# rule one").unwrap();
        assert!(
            again[one..].find("name = \"one\"")
                < again[one..].find("name = \"two\"").or(Some(usize::MAX)),
            "{again}"
        );
        assert!(again.find("name = \"two\"").unwrap() < one, "{again}");
        assert!(
            again.starts_with("# top\n") && again.contains("# the end\n[mqtt]"),
            "{again}"
        );

        // Rules removed entirely, then the model too.
        rules.remove("alert");
        list[1].analysis = Some(rules);
        let third = render(&again, &list).unwrap();
        verify(&again, &third, &list).unwrap();
        list[1].analysis = None;
        let fourth = render(&third, &list).unwrap();
        verify(&third, &fourth, &list).unwrap();
        assert!(!fourth.contains("analysis"), "{fourth}");
    }

    #[test]
    fn a_new_camera_comes_after_the_last_one_and_a_first_one_after_everything() {
        let mut list = cameras(FILE);
        list.push(CameraConfig::with_source("c", "publish:"));
        let text = render(FILE, &list).unwrap();
        verify(FILE, &text, &list).unwrap();
        assert!(text.find("id = \"c\"").unwrap() > text.find("name = \"one\"").unwrap());
        assert!(
            text.find("id = \"c\"").unwrap() < text.find("[mqtt]").unwrap(),
            "{text}"
        );

        let plain = "[server]\nlisten = \"127.0.0.1:8080\"\n";
        let one = vec![CameraConfig::with_source("x", "testsrc://")];
        let text = render(plain, &one).unwrap();
        verify(plain, &text, &one).unwrap();
        assert!(text.starts_with(plain), "{text}");
    }

    #[test]
    fn a_text_that_does_not_read_back_as_the_cameras_is_refused_with_the_place() {
        let list = cameras(FILE);
        let mut other = list.clone();
        other[1].analysis.as_mut().unwrap()["vlm"]["model"] = "n".into();
        let e = verify(FILE, FILE, &other).unwrap_err();
        assert_eq!(e.place, "camera \"b\".analysis.vlm.model", "{e}");
        // Another section changed.
        let changed = FILE.replace("1883", "1884");
        let e = verify(FILE, &changed, &list).unwrap_err();
        assert_eq!(e.place, "mqtt.url", "{e}");
        // A file the loader refuses: its problem's place.
        let broken = format!("{FILE}\n[mse]\nbatch = \"2s\"\n");
        let e = verify(FILE, &broken, &list).unwrap_err();
        assert_eq!(e.place, "mse.batch", "{e}");
        // Not TOML at all: the line.
        let e = render("[server\n", &list).unwrap_err();
        assert_eq!(e.place, "line 1", "{e}");
    }
}
