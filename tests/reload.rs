//! Hot reload of the config file: edits and SIGHUP add, change and remove cameras; unchanged
//! cameras and their viewers are not touched; a broken file changes nothing and is reported;
//! livelens's own write-back is not taken for an edit.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Server};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A config file with these `(id, source)` cameras and `extra` text before them.
fn config(extra: &str, cameras: &[(&str, &str)]) -> String {
    let mut text = format!("# edited by the reload tests\n{extra}\n");
    for (id, source) in cameras {
        text.push_str(&format!(
            "[[camera]]\nid = \"{id}\"\nsource = \"{source}\"\n\n"
        ));
    }
    text
}

/// Replaces the file the way editors do: a new file renamed over the old one.
fn edit(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn status(server: &Server) -> Value {
    server.get_json("/api/config/status")
}

fn reloads(server: &Server) -> u64 {
    status(server)["reloads"].as_u64().unwrap()
}

/// `(id, source)` of every camera the API shows, sorted by id.
fn cameras(server: &Server) -> Vec<(String, String)> {
    let list = server.get_json("/api/cameras");
    let mut out: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const A: &str = "testsrc://?size=320x240&fps=25";
const B: &str = "testsrc://?size=320x240&fps=20";
const B2: &str = "testsrc://?size=352x288&fps=20";
const C: &str = "testsrc://?size=160x120&fps=10";

#[test]
fn editing_the_file_adds_changes_and_removes_cameras_within_3s() {
    let path = common::write_config("reload-edit", &config("", &[("a", A), ("b", B)]));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("a", Duration::from_secs(5));
    server.wait_live("b", Duration::from_secs(5));
    assert_eq!(status(&server)["ok"], true);
    assert_eq!(reloads(&server), 0);

    // Renamed over (most editors): a removed, b changed, c added.
    let started = Instant::now();
    edit(&path, &config("", &[("b", B2), ("c", C)]));
    wait_until(Duration::from_secs(3), "the edit applied", || {
        cameras(&server) == pairs(&[("b", B2), ("c", C)])
    });
    eprintln!("edit applied after {:?}", started.elapsed());
    server.wait_live("c", Duration::from_secs(5));
    wait_until(Duration::from_secs(5), "b runs its new source", || {
        let b = server.get_json("/api/cameras/b");
        b["state"] == "live" && b["video"]["width"] == 352
    });
    let s = status(&server);
    assert_eq!(s["ok"], true, "{s}");
    assert_eq!(s["problems"], json!([]));

    // Written in place (truncate and write, like `echo >`): c removed.
    std::fs::write(&path, config("", &[("b", B2)])).unwrap();
    wait_until(Duration::from_secs(3), "the in-place edit applied", || {
        cameras(&server) == pairs(&[("b", B2)])
    });
    assert_eq!(
        server.get("/api/cameras/c").status(),
        reqwest::StatusCode::NOT_FOUND
    );
    let r = server.resources();
    assert_eq!(r["streams_live"], 1, "{r}");
}

#[test]
fn sighup_reloads_the_file_when_it_is_not_watched() {
    let path = common::write_config("reload-hup", &config("", &[("a", A)]));
    let server = Server::start(&["--config", path.to_str().unwrap(), "--no-watch"]);
    server.wait_live("a", Duration::from_secs(5));
    edit(&path, &config("", &[("a", B), ("c", C)]));
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    };
    hup();
    wait_until(Duration::from_secs(3), "the SIGHUP reload applied", || {
        cameras(&server) == pairs(&[("a", B), ("c", C)])
    });
    assert_eq!(reloads(&server), 1);
    // A SIGHUP with nothing changed reloads and changes nothing.
    hup();
    wait_until(Duration::from_secs(3), "the second SIGHUP", || {
        reloads(&server) == 2
    });
    assert_eq!(cameras(&server), pairs(&[("a", B), ("c", C)]));
    // `a` restarted on its new source at the first reload (still starting on a loaded machine).
    server.wait_live("a", Duration::from_secs(5));
    // The process is alive and serving (SIGHUP's default would have ended it).
    assert_eq!(server.get_json("/healthz")["status"], "ok");
}

#[test]
fn a_broken_file_changes_nothing_and_is_reported_with_every_problem() {
    let path = common::write_config("reload-broken", &config("", &[("a", A), ("b", B)]));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("a", Duration::from_secs(5));
    let before = cameras(&server);

    // Not TOML at all.
    edit(&path, "[[camera]\nid = \"a\"\n");
    wait_until(Duration::from_secs(3), "the syntax error reported", || {
        status(&server)["ok"] == false
    });
    let s = status(&server);
    let problems = s["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{s}");
    assert!(
        problems[0]["place"].as_str().unwrap().starts_with("line "),
        "{s}"
    );

    // TOML, but wrong in three places: each listed with its place.
    let wrong =
        "[server]\nheader_timeout = \"soon\"\n\n[[camera]]\nid = \"a\"\nsource = \"ftp://x\"\n\n\
                 [[camera]]\nid = \"a\"\nsource = \"testsrc://\"\n";
    edit(&path, wrong);
    wait_until(Duration::from_secs(3), "the problems reported", || {
        status(&server)["problems"].as_array().unwrap().len() >= 3
    });
    let s = status(&server);
    let places: Vec<&str> = s["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["place"].as_str().unwrap())
        .collect();
    for place in ["server.header_timeout", "camera[0].source", "camera[1].id"] {
        assert!(places.contains(&place), "{place} missing in {s}");
    }
    assert_eq!(s["ok"], false);
    assert_eq!(s["reloads"], 0, "nothing was applied: {s}");

    // Every camera ran on as before.
    assert_eq!(cameras(&server), before);
    assert_eq!(server.camera_state("a"), "live");
    assert_eq!(server.camera_state("b"), "live");

    // Fixed, with a section that needs a restart: the cameras apply, the section is named.
    edit(
        &path,
        &config(
            "[webrtc]\nlisten = \"127.0.0.1:0\"\n",
            &[("a", A), ("b", B2)],
        ),
    );
    wait_until(Duration::from_secs(3), "the fixed file applied", || {
        status(&server)["ok"] == true
    });
    let s = status(&server);
    assert_eq!(s["restart_needed"], json!(["webrtc"]), "{s}");
    assert_eq!(s["reloads"], 1);
    assert_eq!(cameras(&server), pairs(&[("a", A), ("b", B2)]));
}

#[test]
fn livelens_own_write_back_is_not_taken_for_an_edit() {
    let path = common::write_config("reload-own", &config("", &[("a", A), ("b", B)]));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("a", Duration::from_secs(5));
    // Twelve API changes at once, each written back to the file.
    std::thread::scope(|s| {
        for i in 0..12u32 {
            let server = &server;
            s.spawn(move || {
                let source = format!("testsrc://?size={}x{}", 160 + 16 * i, 120 + 8 * i);
                let r = server.patch_camera("a", &json!({ "source": source }));
                assert!(r.status().is_success(), "{}", r.status());
            });
        }
    });
    let shown = server.get_json("/api/cameras/a")["source"]
        .as_str()
        .unwrap()
        .to_string();
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.contains(&shown), "API {shown}, file {file}");
    assert!(
        file.contains("# edited by the reload tests"),
        "comment kept"
    );

    // Then a person edits b. Events of livelens's own writes came first: they were not
    // reloads, so this edit is the first one, and a's API change stands.
    let edited = file.replace(B, B2);
    edit(&path, &edited);
    wait_until(Duration::from_secs(3), "the edit applied", || {
        server.get_json("/api/cameras/b")["source"] == B2
    });
    assert_eq!(reloads(&server), 1, "{}", status(&server));
    assert_eq!(server.get_json("/api/cameras/a")["source"], shown.as_str());
}

/// An MSE viewer on its own thread's runtime: counts fragments, and notes a close or a second
/// codec description (what a restart of its camera would send).
struct MseWatcher {
    fragments: Arc<AtomicUsize>,
    descriptions: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
}

impl MseWatcher {
    async fn start(server: &Server, path: &str) -> (MseWatcher, tokio::task::JoinHandle<()>) {
        let url = format!("{}{path}", server.base.replace("http://", "ws://"));
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket");
        let watcher = MseWatcher {
            fragments: Arc::new(AtomicUsize::new(0)),
            descriptions: Arc::new(AtomicUsize::new(0)),
            closed: Arc::new(AtomicBool::new(false)),
        };
        let (fragments, descriptions, closed) = (
            watcher.fragments.clone(),
            watcher.descriptions.clone(),
            watcher.closed.clone(),
        );
        let task = tokio::spawn(async move {
            while let Some(message) = ws.next().await {
                match message {
                    Ok(Message::Binary(b)) if b.len() > 8 && &b[4..8] == b"moof" => {
                        fragments.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Message::Text(t)) if t.contains("\"mse\"") => {
                        descriptions.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            closed.store(true, Ordering::Relaxed);
        });
        (watcher, task)
    }
}

#[test]
fn viewers_of_an_unchanged_camera_keep_receiving_through_50_reloads() {
    use common::whep::LiveViewer;
    let other = |i: usize| format!("testsrc://?size=160x120&fps={}", 5 + i % 2);
    let path = common::write_config(
        "reload-fifty",
        &config(
            "",
            &[
                ("keep", "testsrc://?size=320x240&fps=25&gop=25"),
                ("other", &other(1)),
            ],
        ),
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("keep", Duration::from_secs(5));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (mse, mse_task) = MseWatcher::start(&server, "/api/cameras/keep/mse").await;
        let webrtc = LiveViewer::start(&server.url("/api/cameras/keep/whep"))
            .await
            .expect("WHEP offer answered");
        let wait_for = |what: &'static str, n: usize, count: Arc<AtomicUsize>| async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while count.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        wait_for("MSE fragments", 10, mse.fragments.clone()).await;
        wait_for("WebRTC frames", 10, webrtc.frames.clone()).await;
        let client = reqwest::Client::new();
        for i in 0..50 {
            let (mse_before, webrtc_before) =
                (mse.fragments.load(Ordering::Relaxed), webrtc.frames());
            edit(
                &path,
                &config(
                    "",
                    &[
                        ("keep", "testsrc://?size=320x240&fps=25&gop=25"),
                        ("other", &other(i)),
                    ],
                ),
            );
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let s: Value = client
                    .get(server.url("/api/config/status"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if s["reloads"] == i as u64 + 1 {
                    break;
                }
                assert!(Instant::now() < deadline, "reload {i} not applied: {s}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Every tenth round, a PATCH that changes nothing, which must not disturb either.
            if i % 10 == 0 {
                let r = client
                    .patch(server.url("/api/cameras/keep"))
                    .json(&json!({"on_demand": false, "source": "testsrc://?size=320x240&fps=25&gop=25"}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
            // Both keep receiving after each reload.
            wait_for("MSE after a reload", mse_before + 2, mse.fragments.clone()).await;
            wait_for("WebRTC after a reload", webrtc_before + 2, webrtc.frames.clone()).await;
        }
        assert!(!mse.closed.load(Ordering::Relaxed), "the MSE viewer was closed");
        assert_eq!(
            mse.descriptions.load(Ordering::Relaxed),
            1,
            "the MSE viewer got a new description: its camera was restarted"
        );
        let r = server.resources_async().await;
        assert_eq!(r["websockets"], 1, "same WebSocket: {r}");
        assert_eq!(r["peer_connections"], 1, "same peer connection: {r}");
        webrtc.vanish().await;
        mse_task.abort();
    });
    assert_eq!(
        server.get_json("/api/cameras/other")["source"],
        other(49).as_str()
    );
    assert_eq!(server.camera_state("keep"), "live");
}

#[test]
fn forty_reloads_that_add_and_remove_a_watched_camera_leave_nothing_behind() {
    let keep = ("a", "testsrc://?size=320x240&fps=25");
    let with_x = || {
        format!(
            "{}[[camera]]\nid = \"x\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\n\
             [camera.analysis.motion]\nfps = 5.0\n",
            config("", &[keep])
        )
    };
    let path = common::write_config("reload-cycles", &config("", &[keep]));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("a", Duration::from_secs(5));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let baseline = common::counts(&server.resources_async().await);
        for i in 0..40u64 {
            edit(&path, &with_x());
            let deadline = Instant::now() + Duration::from_secs(5);
            let client = reqwest::Client::new();
            loop {
                let r = client
                    .get(server.url("/api/cameras/x"))
                    .send()
                    .await
                    .unwrap();
                if r.status().is_success() {
                    let c: Value = r.json().await.unwrap();
                    if c["state"] == "live" && c["analysis_status"]["motion"].is_object() {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "cycle {i}: x not live");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A viewer of x, which the removal must end.
            let (viewer, task) = MseWatcher::start(&server, "/api/cameras/x/mse").await;
            server
                .resources_until(Duration::from_secs(5), "the viewer counted", |r| {
                    r["websockets"] == 1
                })
                .await;
            edit(&path, &config("", &[keep]));
            let deadline = Instant::now() + Duration::from_secs(5);
            while !viewer.closed.load(Ordering::Relaxed) {
                assert!(
                    Instant::now() < deadline,
                    "cycle {i}: the viewer of x stayed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = task.await;
        }
        server
            .resources_until(Duration::from_secs(10), "counts back at baseline", |r| {
                common::counts(r) == baseline
            })
            .await;
        // And a new client is served.
        let (viewer, task) = MseWatcher::start(&server, "/api/cameras/a/mse").await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while viewer.fragments.load(Ordering::Relaxed) < 5 {
            assert!(Instant::now() < deadline, "no fragments for a new viewer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    });
    assert_eq!(reloads(&server), 80);
}

/// A file whose cameras sit between other sections, with comments before headers, before keys
/// and after values: what a user's hand-written config looks like.
const COMMENTED: &str = r#"# my cameras (top of the file)

# -- the first camera
[[camera]]
id = "first"
# a tiny picture
source = "testsrc://?size=160x120&fps=5"
on_demand = true # started by its viewers

# -- a section between cameras
[mse]
batch = "80ms" # fewer writes

# -- the middle camera
[[camera]]
id = "middle"
source = "testsrc://?size=160x120&fps=5"
record = { keep = "30d" } # its own keep
# -- the middle camera's model
[camera.analysis.vlm]
endpoint = "http://127.0.0.1:9/v1"
model = "m1" # the model comment
api_key = "sk-middle-secret"
# -- rule a
[[camera.analysis.alert]]
name = "a"
question = "Is a door open?"
# -- rule b
[[camera.analysis.alert]]
name = "b"
question = "Is a person there?"

# -- another section between cameras
[sources]
allow_exec = false

# -- the last camera
[[camera]]
id = "last"
source = "publish:"
# end of the file
"#;

/// Each line of `COMMENTED` that is or holds a comment.
fn comments_of(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.find('#').map(|i| l[i..].trim().to_string()))
        .collect()
}

fn check_config(path: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_livelens"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap()
}

/// The settings of a camera as the API shows them (without its running state).
fn settings(server: &Server, id: &str) -> Value {
    let c = server.get_json(&format!("/api/cameras/{id}"));
    let keys = [
        "id",
        "source",
        "on_demand",
        "idle_timeout",
        "transport",
        "timeout",
        "user_agent",
        "publish_key",
        "record",
        "analysis",
    ];
    keys.iter()
        .map(|k| (k.to_string(), c[*k].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[test]
fn every_camera_setting_round_trips_through_the_api_and_the_file_with_comments_kept() {
    let path = common::write_config("write-back-shapes", COMMENTED);
    // Comments of what the changes below remove (the middle camera's model and rules) go with
    // it; every other one must survive every change (alert_rules_keep_their_comments… checks
    // that rules keep theirs).
    let comments: Vec<String> = comments_of(COMMENTED)
        .into_iter()
        .filter(|c| !c.contains("rule") && !c.contains("model"))
        .collect();
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let vlm =
        json!({"endpoint": "http://127.0.0.1:9/v1", "model": "m2", "api_key": "sk-new-secret"});
    let rule = |name: &str, q: &str| json!({"name": name, "question": q, "interval": "4s"});
    // The same sequence for the first, the middle and the last camera of the file.
    for id in ["first", "middle", "last"] {
        let changes = [
            json!({"analysis": {"vlm": vlm, "alert": [rule("x", "Is it x?"), rule("y", "Is it y?")]}}),
            json!({"record": true}),
            json!({"record": {"keep": "10d"}}),
            json!({"analysis": {"vlm": vlm, "alert": [rule("y", "Is it y?"), rule("x", "Is it x?")]}}),
            json!({"analysis": {"vlm": vlm, "alert": [rule("y", "Is it y now?"), rule("z", "Is it z?"), rule("x", "Is it x?")]}}),
            json!({"analysis": {"vlm": vlm, "motion": {"fps": 2.0}, "alert": [rule("z", "Is it z?")],
                   "summary": {"every": "1h", "prompt": "What happened?"},
                   "asr": {"endpoint": "http://127.0.0.1:9/v1", "model": "whisper-1"}}}),
            json!({"on_demand": false, "idle_timeout": "30s"}),
            json!({"source": "rtsp://127.0.0.1:9/x", "transport": "udp", "timeout": "5s", "user_agent": "cam/2"}),
            json!({"source": "testsrc://?size=160x120&fps=5", "transport": null, "timeout": null, "user_agent": null}),
            json!({"record": false}),
            json!({"analysis": {"motion": {}}}),
        ];
        for change in changes {
            let before = std::fs::read_to_string(&path).unwrap();
            let r = server.patch_camera(id, &change);
            assert_eq!(r.status(), 200, "{id} {change}: {}", r.text().unwrap());
            let text = std::fs::read_to_string(&path).unwrap();
            let out = check_config(&path);
            assert!(
                out.status.success(),
                "{id} {change}: check-config refuses the written file: {}\n--- before ---\n{before}\n--- after ---\n{text}",
                String::from_utf8_lossy(&out.stdout)
            );
            for c in &comments {
                // The value comments of values that changed are kept too.
                assert!(
                    text.contains(c.as_str()),
                    "{id} {change}: lost {c:?}\n{text}"
                );
            }
            // What the API shows is what the file holds: a restart would run the same.
            let shown = settings(&server, id);
            for (k, v) in change.as_object().unwrap() {
                if k != "analysis" {
                    assert_eq!(&shown[k], v, "{id} {change}: {k}");
                }
            }
            let s = status(&server);
            assert_eq!(s["write_back"]["ok"], true, "{s}");
        }
    }
    // Restarted on the file, livelens runs exactly what it ran.
    let before: Vec<Value> = ["first", "middle", "last"]
        .iter()
        .map(|id| settings(&server, id))
        .collect();
    drop(server);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let after: Vec<Value> = ["first", "middle", "last"]
        .iter()
        .map(|id| settings(&server, id))
        .collect();
    assert_eq!(before, after);
    // The cameras kept their order in the file.
    let text = std::fs::read_to_string(&path).unwrap();
    let at = |s: &str| text.find(s).unwrap();
    assert!(
        at("id = \"first\"") < at("id = \"middle\"") && at("id = \"middle\"") < at("id = \"last\""),
        "{text}"
    );
}

#[test]
fn alert_rules_keep_their_comments_when_reordered_and_a_key_sent_masked_stays_saved() {
    let path = common::write_config("write-back-rules", COMMENTED);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let mut analysis = server.get_json("/api/cameras/middle")["analysis"].clone();
    assert_eq!(analysis["vlm"]["api_key"], "***");
    let rules = analysis["alert"].as_array_mut().unwrap();
    rules.reverse();
    let r = server.patch_camera("middle", &json!({ "analysis": analysis }));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    // Each rule's comment is still right before its own header.
    let b = text.find("# -- rule b").unwrap();
    let a = text.find("# -- rule a").unwrap();
    assert!(b < a, "{text}");
    // The first header after the comment at `from` is the rule named `name`.
    let rule_after = |from: usize, name: &str| {
        let header = "[[camera.analysis.alert]]";
        let at = from + text[from..].find(header).unwrap() + header.len();
        text[at..]
            .trim_start()
            .starts_with(&format!("name = {name:?}"))
    };
    assert!(rule_after(b, "b"), "{text}");
    assert!(rule_after(a, "a"), "{text}");
    assert!(
        text.contains("sk-middle-secret"),
        "the masked key was kept: {text}"
    );
    assert!(check_config(&path).status.success(), "{text}");

    // The saved key goes nowhere else: a new endpoint with the key still masked is refused,
    // and nothing changes.
    let mut moved = server.get_json("/api/cameras/middle")["analysis"].clone();
    moved["vlm"]["endpoint"] = json!("http://127.0.0.2:9/v1");
    let r = server.patch_camera("middle", &json!({ "analysis": moved }));
    assert_eq!(r.status(), 422);
    let body: Value = r.json().unwrap();
    assert_eq!(
        body["problems"][0]["field"], "analysis.vlm.api_key",
        "{body}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(
        server.get_json("/api/cameras/middle")["analysis"]["vlm"]["endpoint"],
        "http://127.0.0.1:9/v1"
    );
}

#[test]
fn a_change_the_file_cannot_hold_is_neither_saved_nor_applied_and_says_where() {
    let path = common::write_config("write-back-refused", COMMENTED);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    // The user breaks another section by hand: the reload is refused, cameras run on.
    let broken = COMMENTED.replace("batch = \"80ms\"", "batch = \"2s\"");
    edit(&path, &broken);
    wait_until(Duration::from_secs(5), "the broken file refused", || {
        status(&server)["ok"] == false
    });
    let first = settings(&server, "first");

    // Every kind of change is refused with the place, and nothing runs that is not in the file.
    let r = server.patch_camera("first", &json!({"on_demand": false}));
    assert_eq!(r.status(), 500);
    let body: Value = r.json().unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("mse.batch"), "{message}");
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "added", "source": "testsrc://"}),
    );
    assert_eq!(r.status(), 500);
    let r = server
        .http
        .delete(server.url("/api/cameras/last"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(settings(&server, "first"), first);
    assert_eq!(server.get("/api/cameras/added").status(), 404);
    assert_eq!(server.get("/api/cameras/last").status(), 200);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        broken,
        "the file is as the user left it"
    );
    let s = status(&server);
    assert_eq!(s["write_back"]["ok"], false, "{s}");
    assert!(
        s["write_back"]["error"]
            .as_str()
            .unwrap()
            .contains("mse.batch"),
        "{s}"
    );
    assert!(s["write_back"]["at"].is_string(), "{s}");

    // Mended by hand: changes are saved and applied again.
    edit(&path, COMMENTED);
    wait_until(Duration::from_secs(5), "the mended file applied", || {
        status(&server)["ok"] == true
    });
    let r = server.patch_camera("first", &json!({"on_demand": false}));
    assert_eq!(r.status(), 200);
    assert_eq!(server.get_json("/api/cameras/first")["on_demand"], false);
    assert_eq!(status(&server)["write_back"]["ok"], true);
    assert!(check_config(&path).status.success());
}
