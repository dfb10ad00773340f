//! Keeps each track's timestamps continuous across source restarts.
//!
//! A reconnected camera starts its RTP timeline afresh (retina's timestamps restart near 0), and a
//! restarted child process does the same. Viewers that stay attached through the outage must not
//! see time jump backwards, so each new source session is rebased to continue one frame after the
//! last timestamp the viewers saw.

#[derive(Debug, Default, Clone)]
pub struct TrackTimeline {
    offset: i64,
    last: Option<i64>,
    /// The most recent positive distance between frames, used as the gap at a rebase.
    step: i64,
    rebase: bool,
}

impl TrackTimeline {
    /// Marks the start of a new source session: its first timestamp will follow the last one.
    pub fn new_session(&mut self) {
        self.rebase = true;
    }

    /// Maps a source timestamp to the stream's continuous timeline.
    pub fn map(&mut self, pts: i64) -> i64 {
        if std::mem::take(&mut self.rebase) {
            if let Some(last) = self.last {
                self.offset = last + self.step.max(1) - pts;
            }
        }
        let out = pts + self.offset;
        if let Some(last) = self.last {
            if out > last {
                self.step = out - last;
            }
        }
        self.last = Some(out);
        out
    }

    /// The offset in force, for mapping other timestamps of the same frame (DTS).
    pub fn offset(&self) -> i64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_after_a_restart() {
        let mut t = TrackTimeline::default();
        assert_eq!(t.map(0), 0);
        assert_eq!(t.map(3600), 3600);
        assert_eq!(t.map(7200), 7200);
        t.new_session();
        // The new session starts near zero again; viewers see it one frame after 7200.
        assert_eq!(t.map(15), 10_800);
        assert_eq!(t.map(3615), 14_400);
        assert_eq!(t.offset(), 10_785);
    }

    #[test]
    fn first_session_is_unchanged() {
        let mut t = TrackTimeline::default();
        t.new_session();
        assert_eq!(t.map(90_000), 90_000);
    }
}
