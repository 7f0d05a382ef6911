//! The crate's shape, checked: data flows one way between its top-level modules (README,
//! "Code layout"). Reads the `crate::` paths of every source file under `src/` (test modules
//! excluded) and fails on a cycle between top-level modules, or on a module importing one from a
//! layer above it. A small stand-in for `cargo modules dependencies --acyclic`, which would build
//! rust-analyzer in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module may import modules of its own layer (if that makes no cycle) and of
/// layers below; never one above.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["service", "status"],
    &["worker", "schedule", "logging", "devdb"],
    &["tasks"],
    &[
        "compaction",
        "gc",
        "loader",
        "scan",
        "ingest",
        "config",
        "binding",
    ],
    &["job"],
    &["snapshot"],
    &["catalog", "segment", "storage", "queue", "staging"],
    &["table", "keys", "faults", "error", "telemetry"],
];

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

#[test]
fn top_level_modules_form_no_cycle_and_respect_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    let layered: BTreeSet<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    for module in &modules {
        assert!(
            layered.contains(module.as_str()),
            "module `{module}` is in no layer of tests/layering.rs; add it where it belongs"
        );
    }
    let graph = dependency_graph(&src, &modules);
    if let Some(cycle) = find_cycle(&graph) {
        panic!("{}", describe_cycle(&graph, &cycle));
    }
    let violations = layer_violations(&graph);
    assert!(
        violations.is_empty(),
        "modules import modules above them:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_finds_a_cycle() {
    fn edge(graph: &mut Graph, from: &str, to: &str) {
        graph
            .entry(from.into())
            .or_default()
            .entry(to.into())
            .or_default()
            .insert(format!("src/{from}.rs"));
    }
    let mut graph = Graph::new();
    edge(&mut graph, "tasks", "compaction");
    edge(&mut graph, "compaction", "job");
    assert_eq!(find_cycle(&graph), None);
    edge(&mut graph, "job", "tasks");
    let cycle = find_cycle(&graph).expect("a cycle");
    let described = describe_cycle(&graph, &cycle);
    assert!(
        described.contains("job -> tasks (src/job.rs)"),
        "{described}"
    );
    assert_eq!(layer_violations(&graph), vec!["job -> tasks (src/job.rs)"]);
}

#[test]
fn paths_are_read_from_use_trees_and_expressions() {
    let modules: BTreeSet<String> = ["catalog", "storage", "queue", "table"]
        .iter()
        .map(|m| m.to_string())
        .collect();
    let text = "use crate::{catalog::Catalog, storage::{layout, Store}};\n\
                // crate::queue in a comment does not count\n\
                let x = crate::table::validate(\"crate::queue\");\n";
    let found = referenced_modules(text, &modules);
    assert_eq!(
        found,
        ["catalog", "storage", "table"]
            .iter()
            .map(|m| m.to_string())
            .collect()
    );
}

fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_string())
        })
        .collect()
}

/// from -> to -> files where `from` names `to`.
fn dependency_graph(src: &Path, modules: &BTreeSet<String>) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).expect("under src");
        let Some(owner) = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|name| name.trim_end_matches(".rs").to_string())
            .filter(|name| modules.contains(name))
        else {
            continue; // lib.rs, main.rs
        };
        if relative.file_name().is_some_and(|name| name == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        for target in referenced_modules(&without_test_module(&text), modules) {
            if target != owner {
                graph
                    .entry(owner.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .insert(format!("src/{}", relative.display()));
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The file up to its `#[cfg(test)]` module (by this crate's convention, the last item).
fn without_test_module(text: &str) -> String {
    match text.find("#[cfg(test)]\nmod ") {
        Some(at) => text[..at].to_string(),
        None => text.to_string(),
    }
}

/// Top-level modules named by `crate::` paths outside comments and string literals.
fn referenced_modules(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = strip_comments_and_strings(text);
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `my_crate::`, `$crate::`
        }
        if let Some(tree) = rest.strip_prefix('{') {
            found.extend(
                first_level_names(tree)
                    .into_iter()
                    .filter(|n| modules.contains(n)),
            );
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                found.insert(name);
            }
        }
    }
    found
}

/// The first path segment of every item of a use tree's top brace (text after the `{`).
fn first_level_names(tree: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut at_item_start = true;
    let mut current = String::new();
    for c in tree.chars() {
        match c {
            '{' => {
                depth += 1;
                at_item_start = false;
            }
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item_start = true,
            c if depth == 0 && at_item_start && (c.is_alphanumeric() || c == '_') => {
                current.push(c)
            }
            _ => {
                if !current.is_empty() {
                    names.push(std::mem::take(&mut current));
                }
                if !c.is_whitespace() {
                    at_item_start = false;
                }
            }
        }
    }
    if !current.is_empty() {
        names.push(current);
    }
    names
}

fn strip_comments_and_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"\"");
            }
            c => out.push(c),
        }
    }
    out
}

/// A cycle as a list of modules (the first repeated at the end), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn describe_cycle(graph: &Graph, cycle: &[String]) -> String {
    let steps: Vec<String> = cycle
        .windows(2)
        .map(|pair| {
            let files: Vec<&str> = graph[&pair[0]][&pair[1]]
                .iter()
                .map(String::as_str)
                .collect();
            format!("{} -> {} ({})", pair[0], pair[1], files.join(", "))
        })
        .collect();
    format!(
        "a cycle between top-level modules: {}",
        steps.join("; then ")
    )
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn layer_violations(graph: &Graph) -> Vec<String> {
    let mut violations = Vec::new();
    for (from, edges) in graph {
        for (to, files) in edges {
            if let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) {
                if b < a {
                    let files: Vec<&str> = files.iter().map(String::as_str).collect();
                    violations.push(format!("{from} -> {to} ({})", files.join(", ")));
                }
            }
        }
    }
    violations
}
