//! MJPEG: real HTTP clients read `multipart/x-mixed-replace` pictures that decode to the camera's
//! picture at the configured size; viewers share one encoder that runs only while one watches;
//! Chromium shows the stream in an `<img>`.

use crate::common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::Server;
use reqwest::StatusCode;

const CONFIG: &str = "[mjpeg]\nfps = 10\nwidth = 320\n\n[[camera]]\nid = \"cam\"\n\
                      source = \"testsrc://?size=640x360&fps=25&gop=25\"\n";

/// Reads `n` pictures from an MJPEG response; each is checked to decode, and its size returned.
async fn read_pictures(mut response: reqwest::Response, n: usize) -> Vec<(u32, u32, Vec<u8>)> {
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        content_type, "multipart/x-mixed-replace; boundary=frame",
        "content type"
    );
    let mut buffer: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} pictures in 10 s",
            out.len()
        );
        // One whole part in the buffer: boundary, headers, picture, CRLF.
        if let Some(head_end) = find(&buffer, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..head_end])
                .unwrap()
                .to_string();
            assert!(
                head.starts_with("--frame\r\n"),
                "part starts with the boundary: {head:?}"
            );
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .expect("Content-Length")
                .trim()
                .parse()
                .unwrap();
            let start = head_end + 4;
            if buffer.len() >= start + length + 2 {
                let jpeg = buffer[start..start + length].to_vec();
                assert_eq!(&buffer[start + length..start + length + 2], b"\r\n");
                buffer.drain(..start + length + 2);
                let picture = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
                    .expect("each part is a JPEG")
                    .to_luma8();
                out.push((picture.width(), picture.height(), picture.into_raw()));
                continue;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("a chunk within 5 s")
            .expect("read")
            .expect("the body goes on");
        buffer.extend_from_slice(&chunk);
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn viewers_share_one_encoder_that_stops_with_the_last_and_leaves_nothing_behind() {
    let path = common::write_config("mjpeg-share", CONFIG);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let baseline = common::counts(&server.resources_async().await);
        assert_eq!(baseline["transcoders"], 0);
        let client = reqwest::Client::new();
        for round in 0..3 {
            let mut responses = Vec::new();
            for i in 0..5 {
                // Both URLs: livelens's own and go2rtc's.
                let url = if i % 2 == 0 {
                    server.url("/api/cameras/cam/mjpeg")
                } else {
                    server.url("/api/stream.mjpeg?src=cam")
                };
                let r = client.get(url).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                assert_eq!(r.headers()["cache-control"], "no-store");
                responses.push(r);
            }
            let readers: Vec<_> = responses
                .into_iter()
                .map(|r| tokio::spawn(read_pictures(r, 10)))
                .collect();
            let mut all = Vec::new();
            for r in readers {
                all.push(r.await.unwrap());
            }
            for pictures in &all {
                for (w, h, _) in pictures {
                    assert_eq!((*w, *h), (320, 180), "[mjpeg] width, camera's aspect");
                }
                // Video, not a still: the test picture's clock and box move.
                assert!(
                    pictures.windows(2).any(|p| p[0].2 != p[1].2),
                    "round {round}: the pictures never changed"
                );
            }
            drop(all);
            // Every viewer gone (each reader dropped its response): the encoder stops and every count is back.
            server
                .resources_until(Duration::from_secs(5), "counts back at baseline", |r| {
                    common::counts(r) == baseline
                })
                .await;
        }
        // Five viewers at once are counted five times and encoded once.
        let mut open = Vec::new();
        for _ in 0..5 {
            open.push(
                client
                    .get(server.url("/api/cameras/cam/mjpeg"))
                    .send()
                    .await
                    .unwrap(),
            );
        }
        server
            .resources_until(Duration::from_secs(5), "5 viewers, 1 encoder", |r| {
                r["viewers"]["mjpeg"] == 5
                    && r["transcoders"] == 1
                    && r["viewers"]["transcoder"] == 1
            })
            .await;
        drop(open);
        server
            .resources_until(Duration::from_secs(5), "counts back at baseline", |r| {
                common::counts(r) == baseline
            })
            .await;
    });
}

#[test]
fn errors_stopped_cameras_and_removal_end_viewers_cleanly() {
    let path = common::write_config("mjpeg-errors", CONFIG);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    assert_eq!(
        server.get("/api/cameras/nope/mjpeg").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get("/api/stream.mjpeg").status(),
        StatusCode::BAD_REQUEST
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let live_tasks = server.resources_async().await["tasks"].as_u64().unwrap();
        // A viewer of a camera that is then stopped: its body ends.
        let mut r = client
            .get(server.url("/api/cameras/cam/mjpeg"))
            .send()
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("a first picture")
            .unwrap()
            .unwrap();
        let stopped = client
            .post(server.url("/api/cameras/cam/stop"))
            .send()
            .await
            .unwrap();
        assert!(stopped.status().is_success());
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = r.chunk().await {}
        })
        .await;
        assert!(ended.is_ok(), "the MJPEG body did not end with the camera");
        // A stopped camera: a clear 503.
        let r = client
            .get(server.url("/api/cameras/cam/mjpeg"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        server
            .resources_until(Duration::from_secs(5), "no viewer, no encoder", |r| {
                r["viewers"]["mjpeg"] == 0 && r["transcoders"] == 0
            })
            .await;
        // Started again, watched, then removed: the viewer's body ends and nothing stays.
        let started = client
            .post(server.url("/api/cameras/cam/start"))
            .send()
            .await
            .unwrap();
        assert!(started.status().is_success());
        let mut r = client
            .get(server.url("/api/cameras/cam/mjpeg"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .expect("a first picture after the start")
            .unwrap()
            .unwrap();
        let removed = client
            .delete(server.url("/api/cameras/cam"))
            .send()
            .await
            .unwrap();
        assert_eq!(removed.status(), StatusCode::NO_CONTENT);
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = r.chunk().await {}
        })
        .await;
        assert!(
            ended.is_ok(),
            "the MJPEG body did not end with the camera's removal"
        );
        server
            .resources_until(Duration::from_secs(5), "nothing left", |r| {
                r["viewers"]["mjpeg"] == 0
                    && r["transcoders"] == 0
                    && r["streams_live"] == 0
                    && r["tasks"].as_u64().unwrap() < live_tasks
            })
            .await;
    });
}

#[test]
fn chromium_shows_the_stream_in_an_img() {
    let _serial = common::browser::serial();
    let path = common::write_config("mjpeg-browser", CONFIG);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        browser
            .run(
                "const img = document.createElement('img');
                 img.src = '/api/cameras/cam/mjpeg'; document.body.append(img); window.img = img;
                 window.grab = () => { const c = document.createElement('canvas');
                   c.width = img.naturalWidth; c.height = img.naturalHeight;
                   const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                   return c.toDataURL(); };",
            )
            .await;
        browser
            .until(
                Duration::from_secs(10),
                "the picture shown",
                "return window.img.naturalWidth === 320 && window.img.naturalHeight === 180;",
            )
            .await;
        // It plays: what the <img> shows changes.
        browser.run("window.first = window.grab();").await;
        browser
            .until(
                Duration::from_secs(5),
                "the picture to change",
                "return window.grab() !== window.first;",
            )
            .await;
        let r = server.resources_async().await;
        assert_eq!(r["viewers"]["mjpeg"], 1, "{r}");
        browser.close().await;
    });
}

#[test]
fn two_hundred_connect_disconnect_cycles_leave_every_count_at_baseline() {
    let path = common::write_config("mjpeg-cycles", CONFIG);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let baseline = common::counts(&server.resources_async().await);
        let client = reqwest::Client::new();
        for i in 0..200 {
            // Each cycle starts the camera's encoder for its viewer, and its end stops it.
            let mut r = client
                .get(server.url("/api/cameras/cam/mjpeg"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "cycle {i}");
            tokio::time::timeout(Duration::from_secs(5), r.chunk())
                .await
                .unwrap_or_else(|_| panic!("cycle {i}: no picture in 5 s"))
                .unwrap()
                .unwrap();
            drop(r);
        }
        server
            .resources_until(Duration::from_secs(10), "counts back at baseline", |r| {
                common::counts(r) == baseline
            })
            .await;
        // And the next viewer is served.
        let r = client
            .get(server.url("/api/cameras/cam/mjpeg"))
            .send()
            .await
            .unwrap();
        let pictures = read_pictures(r, 3).await;
        assert_eq!(pictures.len(), 3);
    });
}
