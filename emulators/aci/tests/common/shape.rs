//! Structural comparison of a documented example response with the emulator's response: the key
//! paths of the documented body must exist in the emulator's with the same JSON types. Values
//! are not compared (examples carry made-up ids, IPs and times), and extra keys in the emulator's
//! response are fine (the examples show only some of the fields).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The JSON type of `v`; integers and floats are one type, as in JSON itself.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key path in `v` with the JSON types found there. The root is `$`, object members are
/// `.key` (`["key"]` when the key has characters other than letters, digits, `_` and `-`), and
/// the elements of an array share one path ending in `[]` (so an empty array has no element
/// paths, and the types of all elements are collected).
pub fn key_paths(v: &Value) -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut out = BTreeMap::new();
    walk(v, "$".to_owned(), &mut out);
    out
}

fn walk(v: &Value, path: String, out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
    out.entry(path.clone()).or_default().insert(kind(v));
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let plain = k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                let child_path = if plain {
                    format!("{path}.{k}")
                } else {
                    format!("{path}[{k:?}]")
                };
                walk(child, child_path, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                walk(child, format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Whether `path` is `prefix` or lies below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// The differences between `documented` and `actual`: documented paths missing from `actual` or
/// with another type there. `not_produced` lists `(path, why)` of documented paths (and all below
/// them) the emulator knowingly does not produce; each must really be missing or differ, so the
/// list cannot go stale.
pub fn shape_mismatches(
    documented: &Value,
    actual: &Value,
    not_produced: &[(&str, &str)],
) -> Vec<String> {
    let want = key_paths(documented);
    let have = key_paths(actual);
    let mut problems = Vec::new();
    let mut excused: BTreeSet<&str> = BTreeSet::new();
    for (path, kinds) in &want {
        let differs = match have.get(path) {
            None => Some("missing".to_owned()),
            Some(got) if !kinds.is_subset(got) => {
                Some(format!("documented as {kinds:?}, emulator returns {got:?}"))
            }
            Some(_) => None,
        };
        let Some(why) = differs else { continue };
        match not_produced.iter().find(|(p, _)| under(path, p)) {
            Some((p, _)) => {
                excused.insert(p);
            }
            None => problems.push(format!("{path}: {why}")),
        }
    }
    for (p, why) in not_produced {
        if !excused.contains(p) {
            problems.push(format!(
                "{p} is listed as not produced ({why}) but the emulator's response matches it"
            ));
        }
    }
    problems
}

/// Panics with every difference if `actual` does not have the structure of `documented`.
#[track_caller]
pub fn assert_same_shape(
    what: &str,
    documented: &Value,
    actual: &Value,
    not_produced: &[(&str, &str)],
) {
    let problems = shape_mismatches(documented, actual, not_produced);
    assert!(
        problems.is_empty(),
        "{what}: the emulator's response differs in structure from the documented example:\n  {}\n\
         emulator's response: {actual:#}",
        problems.join("\n  ")
    );
}

#[test]
fn key_paths_collect_array_elements_and_quote_odd_keys() {
    let v = serde_json::json!({"a": [{"b": 1}, {"b": 1.5, "c": "x"}], "d/e": {}, "n": []});
    let paths: Vec<String> = key_paths(&v).into_keys().collect();
    assert_eq!(
        paths,
        [
            "$",
            "$.a",
            "$.a[]",
            "$.a[].b",
            "$.a[].c",
            "$.n",
            "$[\"d/e\"]"
        ]
    );
}

#[test]
fn mismatches_report_missing_and_retyped_paths_and_stale_exceptions() {
    let doc = serde_json::json!({"a": {"b": 1, "c": "s"}, "e": [{"f": true}]});
    let act = serde_json::json!({"a": {"b": "1"}, "e": [], "extra": 1});
    let found = shape_mismatches(&doc, &act, &[("$.e[]", "no elements"), ("$.zzz", "stale")]);
    assert_eq!(
        found,
        [
            "$.a.b: documented as {\"number\"}, emulator returns {\"string\"}",
            "$.a.c: missing",
            "$.zzz is listed as not produced (stale) but the emulator's response matches it",
        ]
    );
}
