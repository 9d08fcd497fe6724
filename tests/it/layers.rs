//! Dependencies run one way (DESIGN.md, "Target module map"): http helpers, config and errors
//! → cache → peer → fetch → front → app. A module may name modules of its own layer or lower
//! ones only; this reads every file under `src/` and lists each `crate::` path that goes up.

use std::path::Path;

/// Top-level modules by layer, lowest first.
const LAYERS: &[&[&str]] = &[
    &[
        "error",
        "body",
        "grammar",
        "http",
        "config",
        "metrics",
        "accesslog",
        "sendfile",
        "port_owner",
    ],
    &["cache"],
    &["peer"],
    &["fetch"],
    &["front"],
    &["app"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level modules a line of code names through `crate::` (comments aside).
fn named(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|n| n.trim())
                .collect(),
            None => vec![rest],
        };
        for n in names {
            let module: String = n
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !module.is_empty() {
                out.push(module);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut unknown = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy();
        let top = top.trim_end_matches(".rs");
        if matches!(top, "lib" | "main") {
            continue; // the crate root and the binary name every module
        }
        let Some(own) = layer(top) else {
            unknown.push(top.to_owned());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for module in named(line) {
                match layer(&module) {
                    Some(l) if l > own => {
                        upward.push(format!("src/{}:{}: crate::{module}", rel.display(), n + 1))
                    }
                    Some(_) => {}
                    None => unknown.push(module),
                }
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "modules missing from LAYERS: {unknown:?}"
    );
    assert!(
        upward.is_empty(),
        "imports from a higher layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_scan_sees_grouped_and_nested_paths_but_not_comments() {
    assert_eq!(named("use crate::front::headers;"), ["front"]);
    assert_eq!(
        named("use crate::{body, cache::store::Entry};"),
        ["body", "cache"]
    );
    assert_eq!(
        named("let x = crate::fetch::f(crate::peer::g());"),
        ["fetch", "peer"]
    );
    assert!(named("// see crate::front").is_empty());
}
