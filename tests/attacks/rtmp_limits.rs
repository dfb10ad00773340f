//! See the module list in tests/attacks.rs.

#[allow(unused_imports)]
use super::common;
