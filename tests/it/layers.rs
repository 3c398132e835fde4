//! The shape of `src/`: the folders are layers (ARCHITECTURE.md, "Layers"),
//! and imports between files go down the layers, never round in a circle.
//!
//! A file imports another when its code (tests aside: everything from the
//! first `#[cfg(test)]` on) names a path into the other's module, in a `use`
//! or inline: `crate::…`, `super::…`, `self::…`, or `mk_binary_cache::…` from
//! the programs. A parent naming its own child modules (`use pipeline::Pass`
//! in `mod.rs`) is how Rust nests files, not an import. Comments and string
//! literals are not code.
//!
//! The circles that were removed once came back unnoticed; this test is
//! what keeps them out. When it fails it names the files and the names that
//! tie them. To add a layer, add a row to [`LAYERS`]; an arrow up that the
//! design needs goes in [`ARROWS_UP`], and in ARCHITECTURE.md, which the
//! test checks names it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers of `src/`, from the bottom up: a file may import from its own
/// folder and from the rows below its own. Folders on one row import
/// nothing from each other. A name is a folder of `src/` or a file in it.
const LAYERS: &[&[&str]] = &[
    // Nix formats; code that knows no Nix format.
    &["format", "support"],
    // The cache on disk (`cache::CacheDir`).
    &["cache"],
    &["input"],
    &["ops"],
    // The programs: argument parsing and exit codes.
    // `publish_args.rs`: the arguments both programs parse for `publish`.
    &["main.rs", "bin", "publish_args.rs"],
];

/// Arrows up (or across a row) that the design has, and that ARCHITECTURE.md
/// names: (the importing folder, the file imported, the names it may take,
/// how ARCHITECTURE.md names it).
const ARROWS_UP: &[(&str, &str, &[&str], &str)] = &[(
    "input",
    "ops/write/mod.rs",
    &["Options"],
    "`ops::write::Options`, the settings it fills",
)];

/// Circles known and being removed elsewhere: allowed here until that work
/// is merged, and then taken out of this list (the test fails if one is
/// gone, so that the allowance does not outlive it).
const KNOWN_CIRCLES: &[&[&str]] = &[];

/// A file of `src/`, by its path relative to `src/`, and its module path.
struct SourceFile {
    path: String,
    module: Vec<String>,
}

/// Arrows between files: (from, to) -> the names used.
type Arrows = BTreeMap<(String, String), BTreeSet<String>>;

fn source_files(src: &Path) -> Vec<SourceFile> {
    let mut found = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(src).unwrap();
                found.push(SourceFile {
                    path: relative.to_str().unwrap().to_owned(),
                    module: module_of(relative),
                });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// `format/nar/mod.rs` is `format::nar`; `lib.rs` the crate's root.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Whether the file is a program of its own (`main.rs`, `bin/…`), which
/// reaches the library as `mk_binary_cache::…`.
fn is_program(path: &str) -> bool {
    path == "main.rs" || path.starts_with("bin/")
}

/// The code of `text` before its tests, without comments and literals.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    while i < chars.len() {
        if at(i, "//") {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            i += 2;
            while i < chars.len() && !at(i, "*/") {
                i += 1;
            }
            i += 2;
        } else if (chars[i] == 'r' || at(i, "br")) && is_raw_string_start(&chars, i) {
            // r"…", r#"…"#, br#"…"#: ends at a quote and as many hashes.
            let mut j = i + if chars[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while chars[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            let end: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while j < chars.len() && !at(j, &end) {
                j += 1;
            }
            i = j + end.len();
            out.push(' ');
        } else if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if chars[i] == '\'' && is_char_literal(&chars, i) {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn is_raw_string_start(chars: &[char], i: usize) -> bool {
    let before_is_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let mut j = i + if chars[i] == 'b' { 2 } else { 1 };
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    !before_is_ident && chars.get(j) == Some(&'"')
}

/// `'x'` or `'\n'`, as opposed to a lifetime `'a`.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

/// Identifiers and punctuation, as far as paths need them.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".to_owned());
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

fn is_ident(token: &str) -> bool {
    token.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// The paths a use tree starting at `tokens[*at]` names, each as segments.
fn use_tree(tokens: &[String], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    loop {
        match tokens.get(*at).map(String::as_str) {
            Some("{") => {
                *at += 1;
                while !matches!(tokens.get(*at).map(String::as_str), Some("}") | None) {
                    use_tree(tokens, at, &path, out);
                    if tokens.get(*at).map(String::as_str) == Some(",") {
                        *at += 1;
                    }
                }
                *at += 1;
                return;
            }
            Some("*") => {
                *at += 1;
                out.push(path);
                return;
            }
            Some(t) if is_ident(t) => {
                path.push(t.to_owned());
                *at += 1;
                if tokens.get(*at).map(String::as_str) == Some("::") {
                    *at += 1;
                    continue;
                }
                if tokens.get(*at).map(String::as_str) == Some("as") {
                    *at += 2;
                }
                out.push(path);
                return;
            }
            _ => return,
        }
    }
}

/// Every path of ours the code names: in `use` items and inline.
fn named_paths(tokens: &[String]) -> Vec<Vec<String>> {
    let roots = ["crate", "super", "self", "mk_binary_cache"];
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let after_colons = i > 0 && tokens[i - 1] == "::";
        if tokens[i] == "use" {
            i += 1;
            let mut found = Vec::new();
            use_tree(tokens, &mut i, &[], &mut found);
            paths.extend(found.into_iter().filter(|p| roots.contains(&p[0].as_str())));
        } else if roots.contains(&tokens[i].as_str())
            && !after_colons
            && tokens.get(i + 1).map(String::as_str) == Some("::")
        {
            let mut path = vec![tokens[i].clone()];
            i += 1;
            while tokens.get(i).map(String::as_str) == Some("::")
                && tokens.get(i + 1).is_some_and(|t| is_ident(t))
            {
                path.push(tokens[i + 1].clone());
                i += 2;
            }
            paths.push(path);
        } else {
            i += 1;
        }
    }
    paths
}

/// The module path `path` stands for in the file of module `module`.
fn absolute(module: &[String], program: bool, path: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") if !program => {
            base.clear();
            rest = &rest[1..];
        }
        Some("mk_binary_cache") if program => {
            base.clear();
            rest = &rest[1..];
        }
        Some("super" | "self") if !program => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
            if rest.first().map(String::as_str) == Some("self") {
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// The arrows between the files of `src`.
fn arrows(src: &Path) -> (Vec<SourceFile>, Arrows) {
    let files = source_files(src);
    let by_module: BTreeMap<&[String], &str> = files
        .iter()
        .filter(|f| !is_program(&f.path))
        .map(|f| (f.module.as_slice(), f.path.as_str()))
        .collect();
    let mut arrows = Arrows::new();
    for file in &files {
        let text = fs::read_to_string(src.join(&file.path)).unwrap();
        for path in named_paths(&tokens(&code(&text))) {
            let Some(target) = absolute(&file.module, is_program(&file.path), &path) else {
                continue;
            };
            // The longest prefix that is a file of ours (the crate root aside).
            let Some(to) = (1..=target.len())
                .rev()
                .find_map(|n| by_module.get(&target[..n]).copied())
            else {
                continue;
            };
            if to != file.path {
                let name = target.last().cloned().unwrap_or_default();
                arrows
                    .entry((file.path.clone(), to.to_owned()))
                    .or_default()
                    .insert(name);
            }
        }
    }
    (files, arrows)
}

/// The files' circles: the strongly connected components of more than one
/// file, each sorted (Tarjan's algorithm).
fn circles(files: &[SourceFile], arrows: &Arrows) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.next.get(v).cloned().unwrap_or_default() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().rposition(|&s| s == v).unwrap();
                let mut component: Vec<String> =
                    self.stack.drain(at..).map(str::to_owned).collect();
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for (from, to) in arrows.keys() {
        tarjan.next.entry(from).or_default().push(to);
    }
    for file in files {
        if !tarjan.index.contains_key(file.path.as_str()) {
            tarjan.visit(&file.path);
        }
    }
    tarjan.found.sort();
    tarjan.found
}

/// The folder (or top-level file) of `path`, and its row in [`LAYERS`].
fn layer(path: &str) -> (&str, Option<usize>) {
    let top = path.split('/').next().unwrap_or(path);
    (top, LAYERS.iter().position(|row| row.contains(&top)))
}

/// What is wrong with the imports of `src`, one line each.
fn faults(src: &Path) -> Vec<String> {
    let (files, arrows) = arrows(src);
    let mut faults = Vec::new();
    for file in &files {
        if file.path != "lib.rs" && layer(&file.path).1.is_none() {
            faults.push(format!(
                "src/{} is in no layer: add its folder to LAYERS in tests/it/layers.rs and to ARCHITECTURE.md",
                file.path
            ));
        }
    }
    for ((from, to), names) in &arrows {
        let ((from_top, Some(from_row)), (to_top, Some(to_row))) = (layer(from), layer(to)) else {
            continue;
        };
        if from_top == to_top || to_row < from_row {
            continue;
        }
        let allowed: BTreeSet<&str> = ARROWS_UP
            .iter()
            .filter(|(folder, file, _, _)| *folder == from_top && file == to)
            .flat_map(|(_, _, names, _)| names.iter().copied())
            .collect();
        let up: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !allowed.contains(n))
            .collect();
        if !up.is_empty() {
            faults.push(format!(
                "arrow up: src/{from} -> src/{to}: {} ({from_top} may not import {to_top})",
                up.join(", ")
            ));
        }
    }
    let circles = circles(&files, &arrows);
    for circle in &circles {
        if KNOWN_CIRCLES.iter().any(|known| known == circle) {
            continue;
        }
        let ties: Vec<String> = arrows
            .iter()
            .filter(|((from, to), _)| circle.contains(from) && circle.contains(to))
            .map(|((from, to), names)| {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                format!("src/{from} -> src/{to}: {}", names.join(", "))
            })
            .collect();
        faults.push(format!("import circle: {}", ties.join("; ")));
    }
    for known in KNOWN_CIRCLES {
        if !circles.iter().any(|c| c == known) {
            faults.push(format!(
                "the known circle {known:?} is gone: take it out of KNOWN_CIRCLES"
            ));
        }
    }
    faults
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn imports_go_down_the_layers_and_never_round_in_a_circle() {
    let faults = faults(&repository().join("src"));
    assert!(faults.is_empty(), "\n{}", faults.join("\n"));
}

#[test]
fn every_arrow_up_allowed_here_is_named_in_architecture_md() {
    let architecture = fs::read_to_string(repository().join("ARCHITECTURE.md")).unwrap();
    for (folder, file, _, named) in ARROWS_UP {
        assert!(
            architecture.contains(named),
            "ARCHITECTURE.md does not name the arrow from {folder}/ to {file} ({named:?})"
        );
    }
}

// The checker itself, on small trees: each fault it must find, found.

/// A `src/` of `files` (path, text) in a temporary directory.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

/// The faults of a tree, the known circles of the real one aside.
fn faults_of(files: &[(&str, &str)]) -> Vec<String> {
    let dir = tree(files);
    faults(dir.path())
        .into_iter()
        .filter(|f| !f.starts_with("the known circle"))
        .collect()
}

#[test]
fn the_check_finds_a_circle_and_names_its_files_and_names() {
    let faults = faults_of(&[
        ("lib.rs", "pub mod format;"),
        ("format/mod.rs", "pub mod a; pub mod b;"),
        (
            "format/a.rs",
            "use crate::format::b::{Bee, other};\npub struct Ay;",
        ),
        (
            "format/b.rs",
            "pub struct Bee;\nfn f() -> super::a::Ay { todo!() }",
        ),
    ]);
    assert_eq!(
        faults,
        [
            "import circle: src/format/a.rs -> src/format/b.rs: Bee, other; \
          src/format/b.rs -> src/format/a.rs: Ay"
        ]
    );
}

#[test]
fn the_check_finds_an_arrow_up_inline_or_from_a_program() {
    let faults = faults_of(&[
        ("lib.rs", "pub mod format; pub mod ops;"),
        ("format/mod.rs", "pub fn f() { crate::ops::run(); }"),
        ("ops/mod.rs", "pub fn run() {}"),
        ("main.rs", "use mk_binary_cache::ops::run;"),
    ]);
    assert_eq!(
        faults,
        ["arrow up: src/format/mod.rs -> src/ops/mod.rs: run (format may not import ops)"]
    );
}

#[test]
fn the_check_ignores_tests_comments_and_strings_and_allows_the_named_arrow() {
    let faults = faults_of(&[
        ("lib.rs", "pub mod input; pub mod ops;"),
        (
            "input/mod.rs",
            "use crate::ops::write::Options;\n// crate::ops::write::Other\n\
          const S: &str = \"crate::ops::write::Other\";\nconst C: char = '\"';\n\
          #[cfg(test)]\nmod tests { use crate::ops::write::Other; }",
        ),
        ("ops/mod.rs", "pub mod write;"),
        ("ops/write/mod.rs", "pub struct Options; pub struct Other;"),
    ]);
    assert!(faults.is_empty(), "{faults:?}");
}

#[test]
fn the_check_refuses_a_folder_in_no_layer() {
    let faults = faults_of(&[("lib.rs", "pub mod extra;"), ("extra/mod.rs", "")]);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(
        faults[0].starts_with("src/extra/mod.rs is in no layer"),
        "{faults:?}"
    );
}
