//! The book's API reference (`docs/src/reference/api.md`) is what `openapi.yaml` renders
//! to, so it never drifts from the document; and the rendering leaves nothing out.

use dev::api_reference::{REGENERATE, anchor, openapi_path, reference_path, render};
use serde_yaml_ng::Value;

fn openapi() -> String {
    std::fs::read_to_string(openapi_path()).expect("openapi.yaml")
}

#[test]
fn the_committed_reference_is_what_openapi_yaml_renders_to() {
    let expected = render(&openapi()).expect("openapi.yaml renders");
    let committed = std::fs::read_to_string(reference_path()).unwrap_or_default();
    assert!(
        committed == expected,
        "docs/src/reference/api.md is stale (openapi.yaml changed since it was rendered): run `{REGENERATE}` and commit the file"
    );
}

#[test]
fn every_operation_status_and_schema_is_rendered() {
    let text = openapi();
    let page = render(&text).expect("openapi.yaml renders");
    let doc: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        let path = path.as_str().expect("path");
        for (method, operation) in item.as_mapping().expect("path item") {
            let method = method.as_str().expect("method");
            if !["get", "put", "post", "delete", "patch"].contains(&method) {
                continue;
            }
            operations += 1;
            let heading = format!("### `{} {path}`", method.to_uppercase());
            let section = page
                .split(&format!("{heading}\n"))
                .nth(1)
                .unwrap_or_else(|| panic!("no section {heading}"));
            let section = section.split("\n### ").next().unwrap_or_default();
            if let Some(summary) = operation["summary"].as_str() {
                assert!(section.contains(summary.trim()), "{heading}: summary");
            }
            for (status, _) in operation["responses"].as_mapping().expect("responses") {
                let status = status.as_str().expect("status");
                assert!(
                    section.contains(&format!("| `{status}` |")),
                    "{heading}: status {status} missing"
                );
            }
            assert!(section.contains("**Auth:**"), "{heading}: auth");
        }
    }
    assert!(operations >= 16, "only {operations} operations rendered");
    for (name, _) in doc["components"]["schemas"].as_mapping().expect("schemas") {
        let name = name.as_str().expect("name");
        assert!(
            page.contains(&format!("\n### `{name}`\n")),
            "schema {name} missing"
        );
    }
    // Error codes named in the responses are listed, and a field is not mistaken for one.
    assert!(page.contains("`payment_not_yours`"));
    let codes: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("**Error codes**"))
        .collect();
    assert!(!codes.is_empty());
    assert!(codes.iter().all(|l| !l.contains("`dodo_code`")));
}

#[test]
fn links_to_schemas_and_operations_land_on_their_headings() {
    let page = render(&openapi()).expect("openapi.yaml renders");
    let headings: Vec<String> = page
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(&l.trim_start_matches('#').replace('`', "")))
        .collect();
    for target in page.split("](#").skip(1) {
        let id = target.split(')').next().unwrap_or_default();
        assert!(
            headings.iter().any(|h| h == id),
            "a link to #{id}, which no heading has"
        );
    }
}

#[test]
fn anchors_are_mdbooks() {
    // mdBook's own examples (mdbook-html's id_from_content tests), and ours.
    assert_eq!(
        anchor("--passes: add more rustdoc passes"),
        "--passes-add-more-rustdoc-passes"
    );
    assert_eq!(anchor("_-_12345"), "_-_12345");
    assert_eq!(anchor("GET /payment/status"), "get-paymentstatus");
    assert_eq!(
        anchor("POST /server/users/{user_id}/grants"),
        "post-serverusersuser_idgrants"
    );
}
