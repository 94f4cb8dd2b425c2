//! The book's API reference (`docs/src/reference/api.md`), rendered from `openapi.yaml`:
//! every operation (method, path, summary, authentication, parameters, request body
//! fields, responses with their status and description, error codes) and every component
//! schema, as Markdown. `cargo run -p dev -- api-reference` writes it;
//! `dev/tests/api_reference.rs` (part of `make test`) fails when the committed file is not
//! what `openapi.yaml` renders to, so the reference cannot drift from the document.
//!
//! Anchors are the ones mdBook (and GitHub) derive from a heading's text
//! ([`anchor`]), so links into the reference work in the book and in the repository.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

/// `openapi.yaml`, at the root of the workspace.
pub fn openapi_path() -> PathBuf {
    workspace_root().join("openapi.yaml")
}

/// Where the rendered reference is kept, in the book's sources.
pub fn reference_path() -> PathBuf {
    workspace_root().join("docs/src/reference/api.md")
}

fn workspace_root() -> PathBuf {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR"));
    dev.parent().unwrap_or(dev).to_path_buf()
}

/// The command that regenerates the reference, as the file and the test name it.
pub const REGENERATE: &str = "cargo run -p dev -- api-reference";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The anchor mdBook gives a heading (`mdbook-html`'s `id_from_content`, which GitHub's
/// matches for these headings): its text, lower case, without punctuation, spaces as `-`.
pub fn anchor(heading_text: &str) -> String {
    heading_text
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// `openapi.yaml`'s text as the reference page.
pub fn render(openapi_yaml: &str) -> Result<String, String> {
    let doc: Value =
        serde_yaml_ng::from_str(openapi_yaml).map_err(|e| format!("openapi.yaml: {e}"))?;
    Renderer::new(&doc)?.page()
}

struct Renderer<'a> {
    doc: &'a Value,
    schemas: &'a Mapping,
    /// Every field name any schema has (`dodo_code`, `idempotency_key`…): a word in
    /// backticks in an error's description that names a field is not an error code.
    field_names: BTreeSet<String>,
    anchors: BTreeSet<String>,
}

/// One operation, in the order of `openapi.yaml`.
struct Operation<'a> {
    method: &'a str,
    path: &'a str,
    path_item: &'a Value,
    operation: &'a Value,
}

impl Operation<'_> {
    fn heading(&self) -> String {
        format!("{} {}", self.method.to_uppercase(), self.path)
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(one_line)
}

/// A folded or multi-line string as one paragraph.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A table cell: one line, its pipes escaped.
fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// Inline code, fenced so that a backtick inside cannot end it.
fn code(text: &str) -> String {
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| one_line(&s))
            .unwrap_or_default(),
    }
}

fn mapping<'v>(value: &'v Value, key: &str) -> impl Iterator<Item = (&'v str, &'v Value)> {
    value
        .get(key)
        .and_then(Value::as_mapping)
        .into_iter()
        .flat_map(|m| m.iter())
        .filter_map(|(k, v)| k.as_str().map(|k| (k, v)))
}

fn sequence<'v>(value: &'v Value, key: &str) -> impl Iterator<Item = &'v Value> {
    value
        .get(key)
        .and_then(Value::as_sequence)
        .into_iter()
        .flat_map(|s| s.iter())
}

fn required_names(schema: &Value) -> BTreeSet<&str> {
    sequence(schema, "required")
        .filter_map(Value::as_str)
        .collect()
}

/// Backticked words in `description` that look like error codes (`payment_not_yours`).
fn backticked_codes(description: &str) -> Vec<String> {
    description
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                && word.starts_with(|c: char| c.is_ascii_lowercase())
        })
        .map(str::to_owned)
        .collect()
}

impl<'a> Renderer<'a> {
    fn new(doc: &'a Value) -> Result<Self, String> {
        let schemas = doc
            .get("components")
            .and_then(|c| c.get("schemas"))
            .and_then(Value::as_mapping)
            .ok_or("openapi.yaml has no components.schemas")?;
        let mut renderer = Self {
            doc,
            schemas,
            field_names: BTreeSet::new(),
            anchors: BTreeSet::new(),
        };
        collect_field_names(doc, &mut renderer.field_names);
        Ok(renderer)
    }

    /// A `$ref` inside this document, followed.
    fn resolve(&self, value: &'a Value) -> Result<&'a Value, String> {
        let mut node = value;
        for _ in 0..16 {
            let Some(reference) = node.get("$ref").and_then(Value::as_str) else {
                return Ok(node);
            };
            let pointer = reference
                .strip_prefix("#/")
                .ok_or_else(|| format!("{reference}: only local references are rendered"))?;
            let mut target = self.doc;
            for part in pointer.split('/') {
                let part = part.replace("~1", "/").replace("~0", "~");
                target = target
                    .get(part.as_str())
                    .ok_or_else(|| format!("dangling reference {reference}"))?;
            }
            node = target;
        }
        Err("a $ref cycle".to_owned())
    }

    fn schema_name(reference: &str) -> Option<&str> {
        reference.strip_prefix("#/components/schemas/")
    }

    fn schema_link(name: &str) -> String {
        format!("[`{name}`](#{})", anchor(name))
    }

    fn operations(&self) -> Result<Vec<Operation<'a>>, String> {
        let mut operations = Vec::new();
        for (path, item) in mapping(self.doc, "paths") {
            for method in METHODS {
                if let Some(operation) = item.get(method) {
                    operations.push(Operation {
                        method,
                        path,
                        path_item: item,
                        operation,
                    });
                }
            }
        }
        if operations.is_empty() {
            return Err("openapi.yaml has no operations".to_owned());
        }
        Ok(operations)
    }

    /// A heading whose anchor must be unique on the page (else links would land on the
    /// first of two).
    fn heading(&mut self, out: &mut String, level: usize, title: &str) -> Result<(), String> {
        let id = anchor(title);
        if !self.anchors.insert(id.clone()) {
            return Err(format!("two headings would share the anchor #{id}"));
        }
        let _ = writeln!(out, "{} {}\n", "#".repeat(level), title);
        Ok(())
    }

    fn page(mut self) -> Result<String, String> {
        let mut out = String::new();
        let info = self.doc.get("info").ok_or("openapi.yaml has no info")?;
        let _ = writeln!(out, "# API reference\n");
        let _ = writeln!(
            out,
            "<!-- Generated from openapi.yaml by `{REGENERATE}`: do not edit by hand. `make test` fails when this file no longer matches openapi.yaml. -->\n"
        );
        let _ = writeln!(
            out,
            "**{}** {} (OpenAPI {}){}\n",
            text(info.get("title")).unwrap_or_default(),
            text(info.get("version")).unwrap_or_default(),
            self.doc.get("openapi").map(scalar).unwrap_or_default(),
            text(info.get("summary"))
                .map(|s| format!(": {s}"))
                .unwrap_or_default(),
        );
        if let Some(description) = text(info.get("description")) {
            let _ = writeln!(out, "{description}\n");
        }
        let _ = writeln!(
            out,
            "Generated from `openapi.yaml`; the [API](../api.md) chapter explains the routes in prose.\n"
        );

        self.heading(&mut out, 2, "Servers")?;
        self.servers(&mut out, self.doc);

        self.heading(&mut out, 2, "Authentication")?;
        let _ = writeln!(out, "| scheme | kind | description |\n|---|---|---|");
        let schemes = self
            .doc
            .get("components")
            .map(|c| mapping(c, "securitySchemes").collect::<Vec<_>>())
            .unwrap_or_default();
        for (name, scheme) in &schemes {
            let _ = writeln!(
                out,
                "| `{name}` | {} | {} |",
                cell(&Self::scheme_kind(scheme)),
                cell(&text(scheme.get("description")).unwrap_or_default())
            );
        }
        let default_auth = self.auth(self.doc.get("security"));
        let _ = writeln!(
            out,
            "\nAn operation that names no scheme takes the document's default: {default_auth}.\n"
        );

        let operations = self.operations()?;
        self.heading(&mut out, 2, "Operations")?;
        let _ = writeln!(out, "| method | path | summary | auth |\n|---|---|---|---|");
        for op in &operations {
            let _ = writeln!(
                out,
                "| `{}` | [`{}`](#{}) | {} | {} |",
                op.method.to_uppercase(),
                op.path,
                anchor(&op.heading()),
                cell(&text(op.operation.get("summary")).unwrap_or_default()),
                cell(
                    &self.auth(
                        op.operation
                            .get("security")
                            .or_else(|| self.doc.get("security"))
                    )
                ),
            );
        }
        let _ = writeln!(out);
        for op in &operations {
            self.operation(&mut out, op)?;
        }

        self.heading(&mut out, 2, "Schemas")?;
        let _ = writeln!(
            out,
            "The shapes the operations take and answer (`components.schemas`).\n"
        );
        for (name, schema) in self.schemas.iter() {
            let name = name.as_str().ok_or("a schema's name is not text")?;
            self.schema_section(&mut out, name, schema)?;
        }
        Ok(out.trim_end().to_owned() + "\n")
    }

    fn servers(&self, out: &mut String, holder: &Value) {
        let _ = writeln!(out, "| URL | description |\n|---|---|");
        for server in sequence(holder, "servers") {
            let mut description = text(server.get("description")).unwrap_or_default();
            let defaults: Vec<String> = mapping(server, "variables")
                .map(|(name, variable)| {
                    format!(
                        "`{name}` = `{}`",
                        variable.get("default").map(scalar).unwrap_or_default()
                    )
                })
                .collect();
            if !defaults.is_empty() {
                description.push_str(&format!(" (defaults: {})", defaults.join(", ")));
            }
            let _ = writeln!(
                out,
                "| {} | {} |",
                code(&text(server.get("url")).unwrap_or_default()),
                cell(&description)
            );
        }
        let _ = writeln!(out);
    }

    fn scheme_kind(scheme: &Value) -> String {
        let kind = text(scheme.get("type")).unwrap_or_default();
        let mut described = match kind.as_str() {
            "http" => format!(
                "HTTP `{}`{}",
                text(scheme.get("scheme")).unwrap_or_default(),
                text(scheme.get("bearerFormat"))
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            ),
            "apiKey" => format!(
                "`{}` {}",
                text(scheme.get("name")).unwrap_or_default(),
                text(scheme.get("in")).unwrap_or_default()
            ),
            other => format!("`{other}`"),
        };
        if let Some(aws) = text(scheme.get("x-amazon-apigateway-authtype")) {
            described.push_str(&format!(", API Gateway `{aws}`"));
        }
        described
    }

    /// An operation's security requirement as a reader's word: the schemes, or public.
    fn auth(&self, security: Option<&Value>) -> String {
        let Some(requirements) = security.and_then(Value::as_sequence) else {
            return "none".to_owned();
        };
        let alternatives: Vec<String> = requirements
            .iter()
            .map(|requirement| {
                let names: Vec<String> = requirement
                    .as_mapping()
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .filter_map(Value::as_str)
                    .map(|name| format!("[`{name}`](#authentication)"))
                    .collect();
                if names.is_empty() {
                    "none (public)".to_owned()
                } else {
                    names.join(" and ")
                }
            })
            .collect();
        if alternatives.is_empty() {
            "none (public)".to_owned()
        } else {
            alternatives.join(" or ")
        }
    }

    fn operation(&mut self, out: &mut String, op: &Operation<'a>) -> Result<(), String> {
        self.heading(out, 3, &format!("`{}`", op.heading()))?;
        let operation = op.operation;
        if let Some(summary) = text(operation.get("summary")) {
            let _ = writeln!(out, "{summary}\n");
        }
        if let Some(description) = text(operation.get("description")) {
            let _ = writeln!(out, "{description}\n");
        }
        let security = operation
            .get("security")
            .or_else(|| self.doc.get("security"));
        let _ = write!(out, "**Auth:** {}.", self.auth(security));
        if let Some(id) = text(operation.get("operationId")) {
            let _ = write!(out, " **Operation id:** `{id}`.");
        }
        let _ = writeln!(out, "\n");
        if op.path_item.get("servers").is_some() {
            let _ = writeln!(out, "**Servers** (this path's own):\n");
            self.servers(out, op.path_item);
        }

        // Path-level parameters, then the operation's (which override by name and place).
        let mut parameters: Vec<&Value> = Vec::new();
        for parameter in
            sequence(op.path_item, "parameters").chain(sequence(operation, "parameters"))
        {
            let parameter = self.resolve(parameter)?;
            parameters.retain(|p| {
                p.get("name") != parameter.get("name") || p.get("in") != parameter.get("in")
            });
            parameters.push(parameter);
        }
        if !parameters.is_empty() {
            let _ = writeln!(
                out,
                "**Parameters**\n\n| name | in | required | type | description |\n|---|---|---|---|---|"
            );
            for parameter in parameters {
                let schema = parameter.get("schema").unwrap_or(&Value::Null);
                let mut description = text(parameter.get("description")).unwrap_or_default();
                self.append_constraints(&mut description, schema);
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} | {} |",
                    text(parameter.get("name")).unwrap_or_default(),
                    text(parameter.get("in")).unwrap_or_default(),
                    yes_no(parameter.get("required").and_then(Value::as_bool) == Some(true)),
                    cell(&self.type_of(schema)),
                    cell(&description)
                );
            }
            let _ = writeln!(out);
        }

        if let Some(body) = operation.get("requestBody") {
            let body = self.resolve(body)?;
            let required = body.get("required").and_then(Value::as_bool) == Some(true);
            for (media, content) in mapping(body, "content") {
                let schema = content.get("schema").unwrap_or(&Value::Null);
                let _ = write!(
                    out,
                    "**Request body** (`{media}`, {}): {}.",
                    if required { "required" } else { "optional" },
                    self.type_of(schema)
                );
                if let Some(description) = text(body.get("description")) {
                    let _ = write!(out, " {description}");
                }
                let _ = writeln!(out, "\n");
                let schema = self.resolve(schema)?;
                self.fields_table(out, schema)?;
            }
        }

        let _ = writeln!(
            out,
            "**Responses**\n\n| status | description | body |\n|---|---|---|"
        );
        let mut codes: Vec<String> = Vec::new();
        for (status, response) in mapping(operation, "responses") {
            let response = self.resolve(response)?;
            let mut description = text(response.get("description")).unwrap_or_default();
            let headers: Vec<String> = mapping(response, "headers")
                .map(|(name, header)| {
                    let schema = header.get("schema").unwrap_or(&Value::Null);
                    let mut said = format!("`{name}` ({})", self.type_of(schema));
                    if let Some(d) = text(header.get("description")) {
                        said.push_str(&format!(": {}", d.trim_end_matches('.')));
                    }
                    said
                })
                .collect();
            if !headers.is_empty() {
                description.push_str(&format!(" Headers: {}.", headers.join("; ")));
            }
            let bodies: Vec<String> = mapping(response, "content")
                .map(|(media, content)| {
                    let schema = content.get("schema").unwrap_or(&Value::Null);
                    let shown = self.type_of(schema);
                    if media == "application/json" {
                        shown
                    } else {
                        format!("{shown} (`{media}`)")
                    }
                })
                .collect();
            if status.starts_with('4') || status.starts_with('5') {
                for code in backticked_codes(&description) {
                    if !self.field_names.contains(&code) && !codes.contains(&code) {
                        codes.push(code);
                    }
                }
            }
            let _ = writeln!(
                out,
                "| `{status}` | {} | {} |",
                cell(&description),
                if bodies.is_empty() {
                    "none".to_owned()
                } else {
                    cell(&bodies.join("; "))
                }
            );
        }
        let _ = writeln!(out);
        if !codes.is_empty() {
            let listed: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
            let _ = writeln!(
                out,
                "**Error codes** (`error.code`): {}.\n",
                listed.join(", ")
            );
        }
        Ok(())
    }

    fn schema_section(
        &mut self,
        out: &mut String,
        name: &str,
        schema: &'a Value,
    ) -> Result<(), String> {
        self.heading(out, 3, &format!("`{name}`"))?;
        if let Some(description) = text(schema.get("description")) {
            let _ = writeln!(out, "{description}\n");
        }
        let has_fields = schema.get("properties").is_some() || schema.get("allOf").is_some();
        if !has_fields {
            let mut line = format!("**Type:** {}", self.type_of(schema));
            let limits = constraints(schema);
            if !limits.is_empty() {
                line.push_str(&format!("; {}", limits.join("; ")));
            }
            let _ = writeln!(out, "{line}.\n");
        }
        self.fields_table(out, schema)
    }

    /// The fields of an object schema (its own, and those of the inline parts of an
    /// `allOf`), nested objects as `parent.child` and array items as `list[].field`;
    /// a `$ref` part of an `allOf` is named, not repeated.
    fn fields_table(&self, out: &mut String, schema: &'a Value) -> Result<(), String> {
        let mut rows = Vec::new();
        let mut includes = Vec::new();
        for part in sequence(schema, "allOf") {
            if let Some(reference) = part.get("$ref").and_then(Value::as_str) {
                includes.push(match Self::schema_name(reference) {
                    Some(name) => Self::schema_link(name),
                    None => code(reference),
                });
            } else {
                self.fields(part, "", &mut rows)?;
            }
        }
        self.fields(schema, "", &mut rows)?;
        if !includes.is_empty() {
            let _ = writeln!(
                out,
                "Every field of {}{}\n",
                includes.join(" and "),
                if rows.is_empty() { "." } else { ", and:" }
            );
        }
        if !rows.is_empty() {
            let _ = writeln!(
                out,
                "| field | type | required | description |\n|---|---|---|---|"
            );
            for row in rows {
                let _ = writeln!(out, "{row}");
            }
            let _ = writeln!(out);
        }
        let mut notes = Vec::new();
        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            notes.push("No other field is accepted.".to_owned());
        }
        for (word, key) in [("One of", "oneOf"), ("Any of", "anyOf")] {
            let variants: Vec<String> = sequence(schema, key).map(|v| self.variant(v)).collect();
            if !variants.is_empty() && schema.get("properties").is_some() {
                notes.push(format!("{word}: {}.", variants.join("; or ")));
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(out, "{}\n", notes.join(" "));
        }
        Ok(())
    }

    fn fields(
        &self,
        schema: &'a Value,
        prefix: &str,
        rows: &mut Vec<String>,
    ) -> Result<(), String> {
        let required = required_names(schema);
        for (name, property) in mapping(schema, "properties") {
            let path = format!("{prefix}{name}");
            let mut description = text(property.get("description")).unwrap_or_default();
            let target = self.resolve(property)?;
            if description.is_empty() && property.get("$ref").is_none() {
                description = text(target.get("description")).unwrap_or_default();
            }
            self.append_constraints(&mut description, property);
            rows.push(format!(
                "| `{path}` | {} | {} | {} |",
                cell(&self.type_of(property)),
                yes_no(required.contains(name)),
                cell(&description)
            ));
            self.nested(property, &path, rows)?;
        }
        Ok(())
    }

    /// The fields of an inline object below a field: itself, its array's items, its
    /// variants, its map's values.
    fn nested(
        &self,
        property: &'a Value,
        path: &str,
        rows: &mut Vec<String>,
    ) -> Result<(), String> {
        if property.get("$ref").is_some() {
            return Ok(());
        }
        if property.get("properties").is_some() {
            self.fields(property, &format!("{path}."), rows)?;
        }
        if let Some(items) = property.get("items") {
            self.nested(items, &format!("{path}[]"), rows)?;
        }
        for key in ["oneOf", "anyOf"] {
            for variant in sequence(property, key) {
                self.nested(variant, path, rows)?;
            }
        }
        if let Some(values) = property.get("additionalProperties")
            && values.is_mapping()
        {
            self.nested(values, &format!("{path}.*"), rows)?;
        }
        Ok(())
    }

    fn variant(&self, variant: &Value) -> String {
        if variant.get("$ref").is_some() {
            return self.type_of(variant);
        }
        let mut parts = Vec::new();
        if variant.get("type").is_some() {
            parts.push(self.type_of(variant));
        }
        let required: Vec<String> = sequence(variant, "required")
            .filter_map(Value::as_str)
            .map(code)
            .collect();
        if !required.is_empty() {
            parts.push(format!("with {} required", required.join(", ")));
        }
        for (name, property) in mapping(variant, "properties") {
            parts.push(format!("`{name}`: {}", self.type_of(property)));
        }
        parts.join(", ")
    }

    /// A schema's type in words: `string` (`date-time`), `array of X`, a link to a named
    /// schema, the values of an enum.
    fn type_of(&self, schema: &Value) -> String {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            return match Self::schema_name(reference) {
                Some(name) => Self::schema_link(name),
                None => code(reference),
            };
        }
        if let Some(value) = schema.get("const") {
            return format!("`{}`", scalar(value));
        }
        for (key, joiner) in [("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")] {
            if let Some(variants) = schema.get(key).and_then(Value::as_sequence)
                && schema.get("properties").is_none()
            {
                let shown: Vec<String> = variants.iter().map(|v| self.variant(v)).collect();
                return shown.join(joiner);
            }
        }
        let types: Vec<String> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Sequence(ts)) => ts.iter().map(scalar).collect(),
            _ if schema.get("properties").is_some() => vec!["object".to_owned()],
            _ => Vec::new(),
        };
        let mut shown: Vec<String> = types
            .iter()
            .map(|t| match t.as_str() {
                "array" => match schema.get("items") {
                    Some(items) => format!("array of {}", self.type_of(items)),
                    None => "array".to_owned(),
                },
                "object" => match schema.get("additionalProperties") {
                    Some(values) if values.is_mapping() && schema.get("properties").is_none() => {
                        format!("map of {}", self.type_of(values))
                    }
                    _ => "object".to_owned(),
                },
                "string" => match text(schema.get("format")) {
                    Some(format) => format!("string ({format})"),
                    None => "string".to_owned(),
                },
                other => other.to_owned(),
            })
            .collect();
        if shown.is_empty() {
            shown.push("any".to_owned());
        }
        let mut described = shown.join(" or ");
        if let Some(values) = schema.get("enum").and_then(Value::as_sequence) {
            let values: Vec<String> = values.iter().map(|v| format!("`{}`", scalar(v))).collect();
            described.push_str(&format!(": {}", values.join(", ")));
        }
        described
    }

    /// Limits a schema sets (range, length, pattern, default, examples), after the text.
    fn append_constraints(&self, description: &mut String, schema: &Value) {
        let said = constraints(schema);
        if said.is_empty() {
            return;
        }
        if !description.is_empty() {
            if !description.ends_with('.') {
                description.push('.');
            }
            description.push(' ');
        }
        description.push_str(&capitalised(&said.join("; ")));
        description.push('.');
    }
}

/// What a schema allows beyond its type: range, length, pattern, default, examples.
fn constraints(schema: &Value) -> Vec<String> {
    let mut said = Vec::new();
    let number = |key: &str| schema.get(key).map(scalar);
    match (number("minimum"), number("maximum")) {
        (Some(min), Some(max)) => said.push(format!("{min} to {max}")),
        (Some(min), None) => said.push(format!("at least {min}")),
        (None, Some(max)) => said.push(format!("at most {max}")),
        (None, None) => {}
    }
    match (number("minLength"), number("maxLength")) {
        (Some(min), Some(max)) => said.push(format!("{min} to {max} characters")),
        (Some(min), None) => said.push(format!("at least {min} characters")),
        (None, Some(max)) => said.push(format!("at most {max} characters")),
        (None, None) => {}
    }
    if let Some(pattern) = text(schema.get("pattern")) {
        said.push(format!("pattern {}", code(&pattern)));
    }
    if let Some(default) = schema.get("default") {
        said.push(format!("default `{}`", scalar(default)));
    }
    let examples: Vec<String> = sequence(schema, "examples")
        .map(|e| format!("`{}`", scalar(e)))
        .collect();
    if !examples.is_empty() {
        said.push(format!("e.g. {}", examples.join(", ")));
    }
    said
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The names under every `properties` in the document.
fn collect_field_names(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(map) => {
            for (key, child) in map {
                if key.as_str() == Some("properties")
                    && let Some(fields) = child.as_mapping()
                {
                    names.extend(fields.keys().filter_map(Value::as_str).map(str::to_owned));
                }
                collect_field_names(child, names);
            }
        }
        Value::Sequence(items) => {
            for item in items {
                collect_field_names(item, names);
            }
        }
        _ => {}
    }
}

fn yes_no(yes: bool) -> &'static str {
    if yes { "yes" } else { "no" }
}
