//! Outputs: the ways a viewer gets a camera's picture. One file or folder per output.

pub mod snapshot;
