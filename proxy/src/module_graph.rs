//! The request path's modules import each other in layers, never in a circle:
//! `gateway` → `aggregate` → `route` → `upstream::{http, bridge, sse, websocket, stdio}` → `upstream` →
//! `request`, `shared` → the rest. Checked by reading the sources (`crate::…` paths outside comments and
//! test modules, and `pub use` re-exports of a directory module): `cargo test -p mcpgw-proxy --lib
//! module_graph -- --nocapture` prints every module's imports and every circle left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`upstream::bridge`) → its source with comments and test modules removed.
fn modules(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let rel = rel.to_string_lossy().replace('/', "::");
            let name = rel.strip_suffix("::mod").unwrap_or(&rel).to_owned();
            if name == "lib" || name == "main" || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
            let code: String =
                code.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
            out.insert(name, code);
        }
    }
    out
}

/// The longest module `path` names.
fn resolve<'a>(modules: &'a BTreeMap<String, String>, path: &str) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| modules.get_key_value(&parts[..n].join("::")).map(|(k, _)| k.as_str()))
}

fn idents(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            text[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
                .collect::<String>()
                .trim_end_matches(':')
                .to_owned()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

fn graph(modules: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, code) in modules {
        let set = edges.entry(name.as_str()).or_default();
        for path in idents(code, "crate::") {
            if let Some(target) = resolve(modules, &path)
                && target != name
                && !name.starts_with(&format!("{target}::"))
            {
                set.insert(target);
            }
        }
        for child in idents(code, "pub use ") {
            if let Some(target) = resolve(modules, &format!("{name}::{child}"))
                && target != name
            {
                set.insert(target);
            }
        }
    }
    edges
}

/// Groups of modules that import each other in a circle (Tarjan's strongly connected components).
fn circles<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, edges: &BTreeMap<&'a str, BTreeSet<&'a str>>, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for &w in &edges[v] {
            if !s.index.contains_key(w) {
                visit(w, edges, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                group.push(w);
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort_unstable();
                s.out.push(group);
            }
        }
    }
    let mut s = State { index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), out: Vec::new() };
    for &v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(v, edges, &mut s);
        }
    }
    s.out
}

/// The request path: what one request runs through.
fn on_request_path(module: &str) -> bool {
    let top = module.split("::").next().unwrap_or_default();
    matches!(top, "gateway" | "route" | "request" | "shared" | "upstream" | "aggregate")
}

#[test]
fn module_graph_of_the_request_path_has_no_circle() {
    let modules = modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(modules.contains_key("upstream::bridge") && modules.contains_key("gateway"), "sources found");
    let edges = graph(&modules);
    for (module, imports) in edges.iter().filter(|(m, _)| on_request_path(m)) {
        println!("{module} -> {}", imports.iter().copied().collect::<Vec<_>>().join(", "));
    }
    let found = circles(&edges);
    for circle in &found {
        println!("circle: {}", circle.join(" ↔ "));
    }
    let on_path: Vec<_> = found.iter().filter(|c| c.iter().any(|m| on_request_path(m))).collect();
    assert!(on_path.is_empty(), "request-path modules import each other in a circle: {on_path:?}");
    // The check itself finds circles: a made-up pair that imports each other is one.
    let mut fake = BTreeMap::new();
    fake.insert("a".to_owned(), "use crate::b::X;".to_owned());
    fake.insert("b".to_owned(), "use crate::a::Y;".to_owned());
    assert_eq!(circles(&graph(&fake)), vec![vec!["a", "b"]]);
}
