//! The one way analysers call a model server over HTTP: send, and turn every failure into a
//! reason a user can act on (refused, timed out, an error status with the start of its body).

use std::time::Duration;

use bytes::Bytes;

/// Sends `request` (bound by `timeout`) to `url` and returns the body of a 2xx answer.
pub async fn call(
    request: reqwest::RequestBuilder,
    url: &str,
    timeout: Duration,
) -> Result<Bytes, String> {
    let response = request.timeout(timeout).send().await.map_err(|e| {
        if e.is_timeout() {
            format!("no answer from {url} within {timeout:?}")
        } else if e.is_connect() {
            format!("cannot connect to {url} (connection refused)")
        } else {
            format!("request to {url} failed: {e}")
        }
    })?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading the answer from {url} failed: {e}"))?;
    if !status.is_success() {
        let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(format!("{url} answered {status}: {snippet}"));
    }
    Ok(body)
}
