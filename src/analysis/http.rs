//! The one way analysers call a model server over HTTP: send, and turn every failure into a
//! reason a user can act on (refused, timed out, an error status with a short clean snippet).
//!
//! A model server is trusted with pictures and sound, not with livelens's memory or its API: a
//! redirect may not leave the configured host (it would carry the key elsewhere), an answer
//! larger than [`MAX_ANSWER`] is cut off unread, and what a failing server said reaches the
//! camera's public `reason` only as a short single line of printable text.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// The largest answer read from a model server.
pub const MAX_ANSWER: usize = 4 << 20;
/// How much of an error answer a reason quotes.
const SNIPPET_CHARS: usize = 120;

/// The client analysers share: no proxy, and redirects only within the same host and port.
pub fn client() -> reqwest::Client {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt.previous().last().is_some_and(|from| {
            from.host_str() == attempt.url().host_str()
                && from.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if !same {
            attempt.error("the model server redirected to another host")
        } else if attempt.previous().len() > 5 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .no_proxy()
        .redirect(policy)
        .build()
        .expect("an HTTP client without TLS always builds")
}

/// Sends `request` (bound by `timeout`) to `url` and returns the body of a 2xx answer.
pub async fn call(
    request: reqwest::RequestBuilder,
    url: &str,
    timeout: Duration,
) -> Result<Bytes, String> {
    let mut response = request.timeout(timeout).send().await.map_err(|e| {
        if e.is_timeout() {
            format!("no answer from {url} within {timeout:?}")
        } else if e.is_connect() {
            format!("cannot connect to {url} (connection refused)")
        } else if e.is_redirect() {
            format!("{url} redirected to another host; livelens does not follow")
        } else {
            format!("request to {url} failed: {}", e.without_url())
        }
    })?;
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER as u64)
    {
        return Err(format!(
            "{url} answered {status} with more than {} MiB",
            MAX_ANSWER >> 20
        ));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| format!("reading the answer from {url} failed"))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!(
                "{url} answered {status} with more than {} MiB",
                MAX_ANSWER >> 20
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {}", snippet(&body)));
    }
    Ok(body.freeze())
}

/// The start of an error answer as one short line of printable text.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut space = false;
    for c in text.chars() {
        if out.chars().count() >= SNIPPET_CHARS {
            out.push('…');
            break;
        }
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_short_printable_line() {
        assert_eq!(
            snippet(b"  model\r\n\tnot\x1b[31m found \n"),
            "model not [31m found"
        );
        let long = snippet(&[b'x'; 1000]);
        assert_eq!(long.chars().count(), SNIPPET_CHARS + 1);
        assert!(long.ends_with('…'));
        assert_eq!(snippet(b"\xff\xfe"), "\u{fffd}\u{fffd}");
    }
}
