//! The README documents every setting the code reads, so the operator's guide cannot drift.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target") && !path.ends_with("tests") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn readme_documents_every_environment_variable_the_binaries_read() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut files = Vec::new();
    for krate in ["shared", "ingest", "worker", "sim", "admin"] {
        rust_files(&root.join(krate).join("src"), &mut files);
    }
    let external =
        ["AMQP_URL", "RABBITMQ_API_URL", "DATABASE_URL", "MIGRATE_DATABASE_URL", "WA_API_KEY", "WA_API_BASE_URL"];
    let mut missing = std::collections::BTreeSet::new();
    let mut found = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("\"WAFLEET_") {
            let name: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            found += 1;
            // Names that only unit tests use are not settings.
            if name.starts_with("WAFLEET_TEST_") {
                continue;
            }
            if !readme.contains(&format!("`{name}`")) {
                missing.insert(name);
            }
        }
        for name in external {
            if text.contains(&format!("\"{name}\"")) && !readme.contains(&format!("`{name}`")) {
                missing.insert(name.to_owned());
            }
        }
    }
    assert!(found > 10, "the scan found too few settings; did the layout change?");
    assert!(missing.is_empty(), "settings missing from README.md: {missing:?}");
}
