//! Small pieces every layer shares: durations as written in the config, credentials in URLs,
//! ids. A leaf: it uses nothing else in the crate, so any module may use it without making a
//! cycle between the top-level modules.

mod credentials;
mod duration;
mod id;
mod random;
mod time;

pub use credentials::{
    check_url_credentials, constant_time_eq, mask_credentials, restore_masked_credentials,
};
pub use duration::{format_duration, parse_duration};
pub use id::check_camera_id;
pub use random::random_hex;
pub use time::{parse_rfc3339, rfc3339};
