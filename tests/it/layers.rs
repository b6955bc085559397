//! The server's layers, read from its `crate::` paths: dependencies point one way
//! (platform ← pipeline ← auth ← domain ← app ← surfaces), and the modules of one layer form no
//! cycle. A path that runs back up, or a new knot, fails here with the file and the path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A file may use its own layer and those before it.
const LAYERS: [&str; 6] = ["platform", "pipeline", "auth", "domain", "app", "surface"];

/// The layer of a top-level module of the crate.
fn layer_of(top: &str) -> Option<usize> {
    let name = match top {
        // The `on_db!`/`on_tx!` macros are exported at the crate root from `platform::db`.
        "platform" | "on_db" | "on_tx" => "platform",
        "pipeline" => "pipeline",
        "auth" => "auth",
        "domain" => "domain",
        "app" => "app",
        "http" | "cli" | "startup" | "serve" => "surface",
        _ => return None,
    };
    LAYERS.iter().position(|l| *l == name)
}

/// A file's module path under `src/` (`src/domain/alerts/mod.rs` → `["domain", "alerts"]`).
fn module_of(file: &Path, src: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (doc links may point anywhere).
pub(crate) fn code_lines(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal (a URL) keeps the line: good enough for paths.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::` path of a file as its segments, with `use crate::{a::{b, c}, d}` groups
/// expanded.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '$') {
            continue; // `$crate::` or `foo_crate::`
        }
        expand(&[], rest, &mut out);
    }
    out.into_iter().filter(|p| !p.is_empty()).collect()
}

/// The paths `s` starts with, under `prefix`: `a::b` or `a::{b, c::{d}}`.
fn expand(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    let (segs, tail) = segments(s);
    path.extend(segs);
    if let Some(group) = tail.strip_prefix('{') {
        let end = matching_brace(group);
        for item in split_top_level(&group[..end]) {
            expand(&path, item, out);
        }
    } else {
        out.push(path);
    }
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out
}

/// The `a::b::` segments at the start of `s`, and what follows the last `::` (a group or the
/// rest of the line).
fn segments(s: &str) -> (Vec<String>, &str) {
    let mut segs = Vec::new();
    let mut rest = s.trim_start();
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            return (segs, rest);
        }
        segs.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => return (segs, &rest[end..]),
        }
    }
}

struct Module {
    path: Vec<String>,
    file: PathBuf,
    uses: Vec<Vec<String>>,
}

fn read_modules() -> Vec<Module> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        // The crate root only declares the layers; `main.rs` is the binary (it sees `scrm::`).
        .filter(|f| f.parent() != Some(src.as_path()) || f.ends_with("startup.rs"))
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            Module {
                path: module_of(&file, &src),
                uses: crate_paths(&code_lines(&text)),
                file,
            }
        })
        .collect()
}

#[test]
fn dependencies_point_down_the_layers() {
    let modules = read_modules();
    assert!(modules.len() > 50, "read {} files", modules.len());
    let mut wrong = Vec::new();
    for m in &modules {
        let own = layer_of(&m.path[0])
            .unwrap_or_else(|| panic!("{} is in no layer: add it to LAYERS", m.file.display()));
        for used in &m.uses {
            let Some(theirs) = layer_of(&used[0]) else {
                wrong.push(format!(
                    "{}: crate::{} is in no layer",
                    m.file.display(),
                    used.join("::")
                ));
                continue;
            };
            if theirs > own {
                wrong.push(format!(
                    "{} ({}) uses crate::{} ({})",
                    m.file.display(),
                    LAYERS[own],
                    used.join("::"),
                    LAYERS[theirs]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows that run back up:\n{}",
        wrong.join("\n")
    );
}

/// The unit a cycle is looked for between: a layer's direct child (`domain::alerts`), or the
/// layer itself for `auth` and the surfaces.
fn unit_of(path: &[String]) -> String {
    match path.first().map(String::as_str) {
        Some("platform" | "pipeline" | "domain" | "app") if path.len() > 1 => {
            format!("{}::{}", path[0], path[1])
        }
        Some(top) => top.to_owned(),
        None => String::new(),
    }
}

#[test]
fn the_modules_of_a_layer_form_no_cycle() {
    let modules = read_modules();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &modules {
        let from = unit_of(&m.path);
        for used in &m.uses {
            let to = unit_of(used);
            if to != from && layer_of(&used[0]) == layer_of(&m.path[0]) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_owned());
            cycles.push(cycle.join(" → "));
            return;
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done, cycles);
        }
        stack.pop();
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(
        cycles.is_empty(),
        "cycles within a layer:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_path_reader_sees_groups_and_skips_comments() {
    let code = code_lines(
        "use crate::{app::sync, domain::{tags, staff}};\n// crate::http::x\nlet x = crate::platform::db::now_ms(); $crate::on_db!",
    );
    let paths: Vec<String> = crate_paths(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "app::sync",
            "domain::tags",
            "domain::staff",
            "platform::db::now_ms"
        ]
    );
}

/// The tables a piece of code writes: the identifier after `INSERT INTO`, `UPDATE` and
/// `DELETE FROM` (lower case: `DO UPDATE SET` and `FOR UPDATE SKIP LOCKED` are not tables).
fn written_tables(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for keyword in ["INSERT INTO ", "UPDATE ", "DELETE FROM "] {
        let mut rest = code;
        while let Some(i) = rest.find(keyword) {
            rest = &rest[i + keyword.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            if end > 0 {
                out.insert(rest[..end].to_owned());
            }
        }
    }
    out
}

#[test]
fn every_table_is_written_by_one_module() {
    let mut writers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in read_modules() {
        let text = std::fs::read_to_string(&m.file).unwrap();
        for table in written_tables(&code_lines(&text)) {
            writers.entry(table).or_default().insert(unit_of(&m.path));
        }
    }
    assert!(writers.len() > 30, "found {} written tables", writers.len());
    let shared: Vec<String> = writers
        .iter()
        .filter(|(_, units)| units.len() > 1)
        .map(|(table, units)| {
            format!(
                "{table}: {}",
                units.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        shared.is_empty(),
        "tables written by more than one module (call the owner's store instead):\n{}",
        shared.join("\n")
    );
}

#[test]
fn the_table_reader_sees_writes_only() {
    let tables = written_tables(
        "INSERT INTO note (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 1; \
         UPDATE reminder SET x = 1; DELETE FROM tag WHERE 1; SELECT 1 FROM staff FOR UPDATE SKIP LOCKED",
    );
    assert_eq!(
        tables.into_iter().collect::<Vec<_>>(),
        ["note", "reminder", "tag"]
    );
}

/// Parameter names that hold a WeCom id.
const ID_PARAMS: &[&str] = &[
    "corp_id",
    "corp",
    "user_id",
    "userid",
    "user",
    "external_user_id",
    "external_userid",
    "ext",
    "chat_id",
    "chat",
    "handover",
    "handover_user_id",
    "takeover",
    "takeover_user_id",
    "taker",
    "staff_user_id",
    "staff_id",
    "owner_user_id",
    "new_owner",
    "assignee",
];

/// The names of a signature's parameters typed `&str` or `Option<&str>`.
fn loose_str_params(params: &str) -> Vec<String> {
    split_top_level(params)
        .into_iter()
        .filter_map(|p| {
            let (name, ty) = p.split_once(':')?;
            let ty: String = ty.chars().filter(|c| !c.is_whitespace()).collect();
            let loose = ty == "&str"
                || ty == "Option<&str>"
                || (ty.starts_with("&'") && ty.ends_with("str") && !ty.contains('<'));
            loose.then(|| name.trim().trim_start_matches("mut ").to_owned())
        })
        .collect()
}

#[test]
fn no_function_takes_two_loose_ids() {
    let mut offenders = Vec::new();
    for m in read_modules() {
        let code = code_lines(&std::fs::read_to_string(&m.file).unwrap());
        let mut rest = code.as_str();
        while let Some(at) = rest.find("fn ") {
            rest = &rest[at + 3..];
            let Some(open) = rest.find('(') else { break };
            let name = rest[..open]
                .split('<')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let Some(close) = rest[open..].find(')') else {
                break;
            };
            let params = &rest[open + 1..open + close];
            let ids: Vec<String> = loose_str_params(params)
                .into_iter()
                .filter(|p| ID_PARAMS.contains(&p.as_str()))
                .collect();
            if ids.len() >= 2 {
                offenders.push(format!(
                    "{}: fn {name}({})",
                    m.file.display(),
                    ids.join(", ")
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "two or more WeCom ids as loose &str (swapping them would compile): take CorpId, UserId, \
         ExternalUserId, ChatId or a RelationKey instead:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_loose_id_check_sees_what_it_should() {
    assert_eq!(
        loose_str_params("db: &Db, corp_id: &str, user: Option<&str>, n: i64, ext: &'a str"),
        ["corp_id", "user", "ext"]
    );
    assert!(loose_str_params("key: RelationKey<'_>, corp: &CorpId").is_empty());
}
