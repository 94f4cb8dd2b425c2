//! Builds the catalogue in `plans.toml` (at the workspace root) into the binaries, as
//! JSON of the same shape as the `PLANS` variable, so that one parser validates both at
//! cold start. A file that is not TOML fails the build here, naming the line.
//! `plans.example.toml` (the book's example) is converted too, for the test that keeps it
//! valid; only tests include it.

use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for name in ["plans", "plans.example"] {
        let source = Path::new(&manifest).join("..").join(format!("{name}.toml"));
        println!("cargo::rerun-if-changed={}", source.display());
        let json = match std::fs::read_to_string(&source) {
            Ok(text) => {
                let table: toml::Table = toml::from_str(&text)
                    .unwrap_or_else(|e| panic!("{name}.toml is not valid TOML: {e}"));
                serde_json::to_string(&table).expect("TOML values are JSON values")
            }
            // No file: no built-in catalogue (PLANS or DODO_PRODUCT_ID decide).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "{}".to_owned(),
            Err(e) => panic!("cannot read {name}.toml: {e}"),
        };
        std::fs::write(Path::new(&out).join(format!("{name}.json")), json)
            .expect("OUT_DIR is writable");
    }
}
