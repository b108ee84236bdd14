//! The configuration reference (`docs/configuration.md`) against the
//! schema: every key a table accepts is documented in that table's
//! section. The keys come from the schema itself: every table denies
//! unknown fields, and serde's error for an unknown one lists the fields
//! the table has.

use config::Config;

const REFERENCE: &str = include_str!("../../docs/configuration.md");
const BASE: &str = include_str!("../../examples/farm-membership.toml");
const UNKNOWN: &str = "zz_not_a_key";

/// The tables to check: the header as the reference and TOML write it.
const TABLES: &[&str] = &[
    "[node]",
    "[farm]",
    "[[farm.nodes]]",
    "[[rules]]",
    "[port]",
    "[tap]",
    "[dpdk]",
    "[polling]",
    "[control]",
    "[membership]",
    "[health]",
    "[scripts]",
    "[[checkers]]",
    "[continuity]",
    "[log]",
];

/// The base config with an unknown key in `table` (after its first
/// header, or in a new table at the end where the base has none).
fn with_unknown_key(table: &str) -> String {
    let mut lines: Vec<String> = BASE.lines().map(String::from).collect();
    let header = lines
        .iter()
        .position(|l| l.split('#').next().map(str::trim) == Some(table));
    match header {
        Some(i) => lines.insert(i + 1, format!("{UNKNOWN} = 1")),
        None => {
            lines.push(table.to_string());
            lines.push(format!("{UNKNOWN} = 1"));
        }
    }
    lines.join("\n") + "\n"
}

/// The fields serde says `table` has.
fn fields(table: &str) -> Vec<String> {
    let err = Config::from_toml(&with_unknown_key(table))
        .err()
        .unwrap_or_else(|| panic!("{table}: an unknown key was accepted"))
        .to_string();
    assert!(
        err.contains(UNKNOWN),
        "{table}: not the unknown key's error: {err}"
    );
    let listed = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("{table}: no field list in {err}"))
        .1;
    listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// The reference's section of `table`: from its heading (`## `, or
/// `### ` for a table inside another) to the next section's.
fn section(table: &str) -> &'static str {
    let heading = format!("# `{table}`\n");
    let start = REFERENCE
        .find(&heading)
        .unwrap_or_else(|| panic!("the reference has no section headed {table}"));
    let rest = &REFERENCE[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn every_key_of_every_table_is_in_the_reference() {
    let mut missing = Vec::new();
    for table in TABLES {
        let fields = fields(table);
        assert!(!fields.is_empty(), "{table}: no fields");
        let text = section(table);
        for f in fields {
            if !text.contains(&format!("`{f}`")) && !text.contains(&format!("`{f} ")) {
                missing.push(format!("{table} {f}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:?}"
    );
}

#[test]
fn the_check_finds_a_key_the_reference_lacks() {
    // The check itself: a key that is no field is not listed, a field is.
    let port = fields("[port]");
    assert!(port.iter().any(|f| f == "driver"), "{port:?}");
    assert!(!section("[port]").contains(&format!("`{UNKNOWN}`")));
}
