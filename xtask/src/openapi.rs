//! `openapi [--check]`: the checked-in OpenAPI document is generated from the code.

use std::path::Path;

use anyhow::{Result, bail};

/// Where the document lives.
pub const PATH: &str = "openapi/portunus.openapi.json";

/// Writes the document, or (with `check`) fails when the checked-in one differs.
pub fn run(root: &Path, check: bool) -> Result<()> {
    let doc = portunus_http::openapi();
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    let path = root.join(PATH);
    if check {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != text {
            bail!("{PATH} is stale: run `cargo xtask openapi` and commit the result");
        }
        println!("openapi: {PATH} is up to date");
    } else {
        std::fs::create_dir_all(path.parent().expect("PATH has a directory"))?;
        std::fs::write(&path, text)?;
        println!("openapi: wrote {PATH}");
    }
    Ok(())
}
