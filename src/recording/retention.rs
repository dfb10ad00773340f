//! Which recordings to delete, sans-IO: by age (`keep`, per camera) and by total size
//! (`max_size`, the oldest first). A segment being written is never deleted.

use std::time::Duration;

use super::index::Segment;

/// The ids to delete from `segments` (oldest first, as the index lists them) at `now_us`.
pub fn expired(
    segments: &[Segment],
    now_us: i64,
    keep: impl Fn(&str) -> Duration,
    max_size: u64,
) -> Vec<i64> {
    let mut doomed = Vec::new();
    let mut total: u64 = segments.iter().map(|s| s.size).sum();
    for s in segments {
        if s.open {
            continue;
        }
        let too_old = s.end_us < now_us.saturating_sub(keep(&s.camera).as_micros() as i64);
        if too_old || total > max_size {
            total -= s.size;
            doomed.push(s.id);
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: i64, camera: &str, start_s: i64, size: u64, open: bool) -> Segment {
        Segment {
            id,
            camera: camera.into(),
            start_us: start_s * 1_000_000,
            end_us: (start_s + 10) * 1_000_000,
            path: format!("{camera}/{id}.mp4"),
            size,
            codecs: String::new(),
            open,
        }
    }

    #[test]
    fn old_ones_go_by_each_cameras_keep_and_the_oldest_go_while_too_big() {
        let segments = vec![
            seg(1, "door", 0, 100, false),
            seg(2, "yard", 5, 100, false),
            seg(3, "door", 100, 100, false),
            seg(4, "door", 200, 100, true),
        ];
        let keep = |c: &str| Duration::from_secs(if c == "door" { 150 } else { 1000 });
        // At 260 s: door's segment 1 ended at 10 s, older than 150 s; yard keeps longer.
        assert_eq!(expired(&segments, 260_000_000, keep, 1_000), vec![1]);
        // 400 bytes in all, 250 allowed: the oldest go until it fits (1 for age, then 2).
        assert_eq!(expired(&segments, 260_000_000, keep, 250), vec![1, 2]);
        // The open segment stays even when it alone is too big.
        assert_eq!(expired(&segments, 260_000_000, keep, 10), vec![1, 2, 3]);
    }
}
