//! Names that become part of URLs, file names and MQTT topics.

/// Camera ids appear in URLs and MQTT topics: keep them to a safe alphabet.
pub fn check_camera_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid camera id (1 to 64 characters of a-z, 0-9, _ and -)"
        ))
    }
}
