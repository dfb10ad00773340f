//! Every config example in the README (each ```toml block) is a file `check-config` accepts
//! as written: a newcomer copies them.

use std::process::Command;

use crate::common::temp_dir;

#[test]
fn every_toml_example_in_the_readme_passes_check_config() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let dir = temp_dir("readme-examples");
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in readme.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some((n + 2, String::new())),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```toml block");
    assert!(
        blocks.len() >= 8,
        "only {} toml examples found",
        blocks.len()
    );
    let mut failures = Vec::new();
    for (line, text) in &blocks {
        let file = dir.join(format!("readme-line-{line}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "README.md line {line}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
