//! `make dev` serves the documentation: the book at `/docs/` (static files from the built
//! book, with their content types, `index.html` for a folder, never a file outside it)
//! and `openapi.yaml` at `/openapi.yaml`; before the book is built, `/docs/` says how to
//! build it. Run as a person runs it: the `dev` binary on a free port, over HTTP.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn http() -> reqwest::Client {
    paywall::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The dev server with its book read from `book`; returns it and its banner.
async fn start(port: u16, state: &std::path::Path, book: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dev"))
        .arg("serve")
        .env("PORT", port.to_string())
        .env("PAYWALL_STATE_DIR", state)
        .env("PAYWALL_BOOK_DIR", book)
        .env_remove("DODO_PAYMENTS_API_KEY")
        .env_remove("DEV_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the dev server starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut banner = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("Ready.") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the server printed Ready.:\n{banner}");
    // Keep reading its log, so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, banner)
}

/// A request sent as written, path and all (an HTTP client would normalise `..` away).
async fn raw_get(port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("answer");
    answer
}

struct Answer {
    status: u16,
    content_type: String,
    location: String,
    body: String,
}

async fn get(base: &str, path: &str) -> Answer {
    let response = http()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("answer");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (content_type, location) = (header("content-type"), header("location"));
    Answer {
        status: response.status().as_u16(),
        content_type,
        location,
        body: response.text().await.expect("body"),
    }
}

#[tokio::test]
async fn the_book_and_openapi_yaml_are_served_and_nothing_outside_the_book() {
    let scratch = std::env::temp_dir().join(format!("paywall-docs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch");
    let book = scratch.join("book");
    let port = free_port();
    let (mut server, banner) = start(port, &scratch.join("state"), &book).await;
    let base = format!("http://127.0.0.1:{port}");
    assert!(banner.contains(&format!("{base}/docs/")), "{banner}");
    assert!(banner.contains("make docs"), "{banner}");
    assert!(banner.contains(&format!("{base}/openapi.yaml")), "{banner}");

    // openapi.yaml, as the repository has it.
    let openapi = get(&base, "/openapi.yaml").await;
    assert_eq!(openapi.status, 200);
    assert_eq!(openapi.content_type, "application/yaml");
    let expected = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml"))
        .expect("openapi.yaml");
    assert_eq!(openapi.body, expected);

    // No book yet: /docs/ says how to build it.
    let missing = get(&base, "/docs/").await;
    assert_eq!(missing.status, 200);
    assert!(missing.content_type.starts_with("text/html"));
    assert!(missing.body.contains("make docs"), "{}", missing.body);
    assert_eq!(get(&base, "/docs/index.html").await.status, 404);

    // The book built (as make docs would), with a file beside it that must stay unseen.
    std::fs::create_dir_all(book.join("css")).expect("css");
    std::fs::create_dir_all(book.join("reference")).expect("reference");
    std::fs::write(book.join("index.html"), "<p>the book</p>").expect("index");
    std::fs::write(book.join("css/chrome.css"), "body {}").expect("css");
    std::fs::write(book.join("toc-1234.js"), "let x;").expect("js");
    std::fs::write(book.join("reference/index.html"), "<p>reference</p>").expect("ref");
    std::fs::write(book.join("reference/api.html"), "<p>api</p>").expect("api");
    std::fs::write(scratch.join("secret.txt"), "SECRET").expect("secret");
    #[cfg(unix)]
    std::os::unix::fs::symlink(scratch.join("secret.txt"), book.join("link.txt")).expect("link");

    let redirect = get(&base, "/docs").await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.location, "/docs/");
    for (path, content_type, body) in [
        ("/docs/", "text/html; charset=utf-8", "<p>the book</p>"),
        (
            "/docs/index.html",
            "text/html; charset=utf-8",
            "<p>the book</p>",
        ),
        ("/docs/css/chrome.css", "text/css; charset=utf-8", "body {}"),
        (
            "/docs/toc-1234.js",
            "text/javascript; charset=utf-8",
            "let x;",
        ),
        (
            "/docs/reference/",
            "text/html; charset=utf-8",
            "<p>reference</p>",
        ),
        (
            "/docs/reference/api.html",
            "text/html; charset=utf-8",
            "<p>api</p>",
        ),
    ] {
        let answer = get(&base, path).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.content_type, content_type, "{path}");
        assert_eq!(answer.body, body, "{path}");
    }
    let folder = get(&base, "/docs/reference").await;
    assert_eq!(folder.status, 308);
    assert_eq!(folder.location, "/docs/reference/");
    let absent = get(&base, "/docs/nothing.html").await;
    assert_eq!(absent.status, 404);
    assert!(absent.content_type.starts_with("application/json"));

    // Nothing outside the book, however the path is written.
    for path in [
        "/docs/../secret.txt",
        "/docs/reference/../../secret.txt",
        "/docs/%2e%2e/secret.txt",
        "/docs/%2E%2E%2Fsecret.txt",
        "/docs/..%2fsecret.txt",
        "/docs/..%5csecret.txt",
        "/docs/%2f%2e%2e/secret.txt",
        "/docs/link.txt",
    ] {
        let answer = raw_get(port, path).await;
        assert!(
            !answer.contains("SECRET"),
            "{path} reached a file outside the book:\n{answer}"
        );
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"),
            "{path}: {answer}"
        );
    }

    let _ = server.start_kill();
    let _ = server.wait().await;
    let _ = std::fs::remove_dir_all(&scratch);
}
