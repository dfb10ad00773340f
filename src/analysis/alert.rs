//! Alert rules, sans-IO: a yes/no question asked of the model about the picture, its answer
//! read robustly ("Yes.", "yes, a person…", "**No**", "The answer is no"), and the rule's state
//! with a debounce (`min_duration`): a new answer must hold that long before the state flips.

use std::time::{Duration, Instant};

/// What a model's answer says: yes, no, or neither (the state is then left as it is).
pub fn yes_no(answer: &str) -> Option<bool> {
    let words: Vec<String> = answer
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let verdict = |w: &str| match w {
        "yes" | "yeah" | "yep" | "true" | "affirmative" | "correct" => Some(true),
        "no" | "nope" | "false" | "negative" | "not" | "none" => Some(false),
        _ => None,
    };
    // The first word decides when it is a verdict; otherwise a lone "yes" or "no" in the
    // first sentence does ("The answer is no.", "I think yes").
    if let Some(v) = words.first().and_then(|w| verdict(w)) {
        return Some(v);
    }
    let first_sentence = answer.split(['.', '!', '?', '\n']).next().unwrap_or("");
    let mut found = None;
    for w in first_sentence
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
    {
        let v = match w.as_str() {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        };
        if let Some(v) = v {
            if found.is_some_and(|f| f != v) {
                return None;
            }
            found = Some(v);
        }
    }
    found
}

/// A change of a rule's state, to become an `alert` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    Start,
    End,
}

/// One rule's state: active or not, and an answer that differs from it since when.
#[derive(Debug, Clone)]
pub struct RuleState {
    min_duration: Duration,
    pub active: bool,
    differing_since: Option<Instant>,
}

impl RuleState {
    pub fn new(min_duration: Duration) -> RuleState {
        RuleState {
            min_duration,
            active: false,
            differing_since: None,
        }
    }

    /// An answer at `now`: the flip it causes, if any.
    pub fn answer(&mut self, yes: bool, now: Instant) -> Option<Flip> {
        if yes == self.active {
            self.differing_since = None;
            return None;
        }
        let since = *self.differing_since.get_or_insert(now);
        if now.duration_since(since) < self.min_duration {
            return None;
        }
        self.active = yes;
        self.differing_since = None;
        Some(if yes { Flip::Start } else { Flip::End })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_robustly() {
        for (text, want) in [
            ("Yes.", Some(true)),
            ("yes, a person is at the door", Some(true)),
            ("**Yes**", Some(true)),
            ("  \"No\"", Some(false)),
            ("No, the doorway is empty.", Some(false)),
            ("Nope", Some(false)),
            ("The answer is no.", Some(false)),
            ("I think yes. But no one is sure.", Some(true)),
            ("There is no person.", Some(false)),
            ("Maybe", None),
            ("", None),
            ("Notably, the box is on the left.", None),
        ] {
            assert_eq!(yes_no(text), want, "{text:?}");
        }
    }

    #[test]
    fn a_new_answer_must_hold_for_min_duration() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut now = RuleState::new(Duration::ZERO);
        assert_eq!(now.answer(true, at(0)), Some(Flip::Start));
        assert_eq!(now.answer(true, at(1)), None);
        assert_eq!(now.answer(false, at(2)), Some(Flip::End));
        let mut debounced = RuleState::new(Duration::from_secs(3));
        assert_eq!(debounced.answer(true, at(0)), None);
        assert_eq!(
            debounced.answer(false, at(1)),
            None,
            "back: the clock restarts"
        );
        assert_eq!(debounced.answer(true, at(2)), None);
        assert_eq!(debounced.answer(true, at(4)), None);
        assert_eq!(debounced.answer(true, at(5)), Some(Flip::Start));
        assert!(debounced.active);
    }
}
