//! An LL-HLS client for tests: what a low-latency player fetches, part by part.

use std::time::Duration;

/// `(msn, part)` of the last part a media playlist lists.
pub fn last_part(playlist: &str) -> (u64, u64) {
    let mut msn: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no media sequence in {playlist}"));
    let (mut parts, mut last) = (0, (0, 0));
    for line in playlist.lines() {
        if line.starts_with("#EXT-X-PART:") {
            parts += 1;
            last = (msn, parts - 1);
        } else if !line.starts_with('#') && !line.is_empty() {
            msn += 1;
            parts = 0;
        }
    }
    last
}

/// An LL-HLS client of `camera` (server at `base`) for `seconds`, as hls.js fetches: the init
/// segment (again when it changes) and every part after the newest independent one, each new
/// part after a blocking reload, joined as fetched. Panics if a part is skipped.
pub fn parts(http: &reqwest::blocking::Client, base: &str, camera: &str, seconds: f64) -> Vec<u8> {
    let get = |path: &str| {
        let r = http
            .get(format!("{base}/api/cameras/{camera}/hls/{path}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.bytes().unwrap()
    };
    let number = |uri: &str| -> u64 {
        uri.rsplit_once("part")
            .unwrap()
            .1
            .trim_end_matches(".mp4")
            .parse()
            .unwrap()
    };
    let mut playlist = String::from_utf8(get("stream.m3u8").to_vec()).unwrap();
    let mut next: Option<u64> = playlist
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:") && l.contains("INDEPENDENT=YES"))
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .map(number)
        .next_back();
    let (mut bytes, mut init, mut map) = (Vec::new(), String::new(), String::new());
    let end = std::time::Instant::now() + Duration::from_secs_f64(seconds);
    while std::time::Instant::now() < end {
        for line in playlist.lines() {
            if let Some(m) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
                map = m.trim_end_matches('"').to_string();
            }
            let Some(uri) = line
                .strip_prefix("#EXT-X-PART:")
                .and_then(|l| l.split("URI=\"").nth(1))
                .and_then(|l| l.split('"').next())
            else {
                continue;
            };
            let n = number(uri);
            if next.is_none_or(|next| n < next) {
                continue;
            }
            assert_eq!(next, Some(n), "LL-HLS: part {n} came before {next:?}");
            if map != init {
                init = map.clone();
                bytes.extend_from_slice(&get(&init));
            }
            bytes.extend_from_slice(&get(uri));
            next = Some(n + 1);
        }
        let (msn, part) = last_part(&playlist);
        let path = format!("stream.m3u8?_HLS_msn={msn}&_HLS_part={}", part + 1);
        playlist = String::from_utf8(get(&path).to_vec()).unwrap();
    }
    bytes
}
