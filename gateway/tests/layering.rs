//! The gateway's modules form layers (the `# Layout` block of `src/lib.rs`): a module may use only the modules on the
//! lines above its own. This test reads that block and every source file, and fails on a `crate::` path that points
//! to a module on the same line or below — an import that would tie the layers back into a knot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layer of each top-level module, from the `# Layout` block of `lib.rs` (0 = the lowest layer).
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let block = lib
        .split("//! # Layout")
        .nth(1)
        .and_then(|rest| rest.split("//! ```text\n").nth(1))
        .and_then(|rest| rest.split("//! ```").next())
        .expect("lib.rs has a `# Layout` block with a ```text list of layers");
    let mut layers = BTreeMap::new();
    for (layer, line) in block.lines().enumerate() {
        let line = line.trim_start_matches("//!").trim();
        let names = line.split("  ").next().unwrap_or_default();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            layers.insert(name.to_owned(), layer);
        }
    }
    layers
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules `code` names through `crate::` paths, comments left out (a doc link is no import).
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `strata_crate::` or similar is not this crate.
            let standalone = at == 0
                || !rest[..at]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if standalone && !name.is_empty() {
                found.push(name);
            }
            rest = after;
        }
        // `use crate::{a, b}`: every name in the braces.
        if let Some(group) = line.split("crate::{").nth(1) {
            let group = group.split('}').next().unwrap_or_default();
            found.extend(
                group
                    .split(',')
                    .filter_map(|p| p.trim().split("::").next())
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    found
}

/// The paths in `code` (of `module`, in layer `own`) that point to its own layer or above.
fn violations(
    module: &str,
    own: usize,
    code: &str,
    layers: &BTreeMap<String, usize>,
) -> Vec<String> {
    crate_paths(code)
        .into_iter()
        .filter(|used| used != module)
        .filter_map(|used| match layers.get(&used) {
            Some(&layer) if layer < own => None,
            Some(_) => Some(format!("`{module}` uses `{used}`")),
            // An item of the crate root (`crate::run`, `crate::Config`): the root is above every module.
            None => Some(format!("`{module}` uses the crate root's `{used}`")),
        })
        .collect()
}

#[test]
fn imports_point_only_to_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let layers = layers(&lib);
    assert!(
        layers.len() >= 10,
        "the Layout block names the modules: {layers:?}"
    );
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a path");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        // The crate root and the binary put everything together; `fuzz` is the root's test-only property tests.
        if ["lib", "main", "fuzz"].contains(&module.as_str()) {
            continue;
        }
        let Some(&own) = layers.get(&module) else {
            panic!("module `{module}` is missing from the Layout block of lib.rs");
        };
        let code = std::fs::read_to_string(file).expect("source");
        for wrong in violations(&module, own, &code, &layers) {
            upward.push(format!("{}: {wrong}", relative.display()));
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up or sideways in the Layout of lib.rs:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_path_reader_sees_every_form() {
    let code = "use crate::grpc::frame;\nuse crate::{config::Config, error};\n// crate::admin\nx(crate::route::Router)";
    assert_eq!(crate_paths(code), ["grpc", "config", "error", "route"]);
}

#[test]
fn an_upward_or_sideways_import_is_reported() {
    let lib = "//! # Layout\n//!\n//! ```text\n//! low, side   the bottom\n//! high        the top\n//! ```\n";
    let layers = layers(lib);
    assert_eq!((layers["low"], layers["side"], layers["high"]), (0, 0, 1));
    assert!(violations("high", 1, "use crate::low::X;", &layers).is_empty());
    assert_eq!(
        violations("low", 0, "use crate::high::X;", &layers),
        ["`low` uses `high`"]
    );
    assert_eq!(
        violations("low", 0, "use crate::side::X;", &layers),
        ["`low` uses `side`"]
    );
    assert_eq!(
        violations("low", 0, "crate::run()", &layers),
        ["`low` uses the crate root's `run`"]
    );
}
