//! Credentials in URLs: masked wherever text leaves livelens (logs, API, events), restored when
//! a masked URL is sent back, refused when they cannot be parsed right.

/// Replaces the user-info of every `scheme://user:pass@host` in `text` with `***:***`, so
/// credentials never reach logs or API output. Works on whole commands too (exec: sources).
///
/// A password may hold an unencoded `/`, `?` or `#` (users paste them so): then the user-info
/// runs up to the last `@` of the word, and all of it is masked. Over-masking a path with an `@`
/// in it is the price of never showing such a password.
pub fn mask_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let word_end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let word = &tail[..word_end];
        match word.rfind('@') {
            Some(at) => {
                out.push_str("***:***");
                out.push_str(&word[at..]);
            }
            None => out.push_str(word),
        }
        rest = &tail[word_end..];
    }
    out.push_str(rest);
    out
}

/// The inverse of [`mask_credentials`] for a URL sent back as it was shown: if `new` is `old`
/// with its user-info masked, it is `old`; otherwise `new` unchanged (a real change, or new
/// credentials).
pub fn restore_masked_credentials(new: &str, old: &str) -> String {
    if new.contains("***:***@") && mask_credentials(old) == new {
        old.to_string()
    } else {
        new.to_string()
    }
}

/// Refuses a URL whose user name or password holds a character that ends the user-info
/// early (`/ ? #`), or a space: such a URL would fail for ever and show the password.
pub fn check_url_credentials(url: &str) -> Result<(), String> {
    const HOW: &str = "percent-encode them in the user name and password: / as %2F, ? as %3F, \
                       # as %23, @ as %40, space as %20";
    if url.trim().contains(char::is_whitespace) {
        return Err(format!("contains a space; {HOW}"));
    }
    let rest = url.split_once("://").map_or("", |x| x.1);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[authority_end..].contains('@') {
        return Err(format!(
            "has an @ after a /, ? or # (a password with one of those in it?); {HOW}"
        ));
    }
    Ok(())
}

/// Compares every byte whatever the first difference, so timing tells nothing of a secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_credentials_everywhere() {
        assert_eq!(
            mask_credentials("rtsp://admin:secret@10.0.0.2:554/stream1"),
            "rtsp://***:***@10.0.0.2:554/stream1"
        );
        assert_eq!(
            mask_credentials("rtsp://10.0.0.2/x?user=a"),
            "rtsp://10.0.0.2/x?user=a"
        );
        assert_eq!(
            mask_credentials("ffmpeg -i rtsp://u:p@h/a -i rtsps://x@y/b -f mpegts -"),
            "ffmpeg -i rtsp://***:***@h/a -i rtsps://***:***@y/b -f mpegts -"
        );
        assert_eq!(mask_credentials("rtsp://a:b@c"), "rtsp://***:***@c");
        // Unencoded / ? # in a password: the whole user-info is still masked.
        for url in [
            "rtsp://admin:pa/ss@cam/s",
            "rtsp://admin:p?w@cam",
            "rtsp://a:p#w@cam:554/x",
        ] {
            let masked = mask_credentials(url);
            assert!(masked.starts_with("rtsp://***:***@cam"), "{masked}");
            assert!(!masked.contains("pa") && !masked.contains("p?w") && !masked.contains("p#w"));
        }
    }

    #[test]
    fn a_masked_url_sent_back_keeps_its_credentials() {
        let old = "rtsp://admin:secret@cam:554/s";
        let shown = mask_credentials(old);
        assert_eq!(restore_masked_credentials(&shown, old), old);
        // Another host or path with masked credentials is not the old URL: taken as sent.
        let moved = "rtsp://***:***@other:554/s";
        assert_eq!(restore_masked_credentials(moved, old), moved);
        let fresh = "rtsp://admin:new@cam:554/s";
        assert_eq!(restore_masked_credentials(fresh, old), fresh);
    }
}
