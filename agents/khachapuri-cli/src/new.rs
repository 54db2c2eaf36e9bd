//! `khachapuri new`: a cargo project for a function, ready for `khachapuri run` and `khachapuri deploy`.
//! It reads the request the way the curl interface hands it over (body on stdin; method, path, query
//! and headers in the environment) and answers with CGI headers, using only the standard library.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// `khachapuri new` options.
#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The directory to create; its last part names the crate (letters, digits, `-`, `_`).
    path: PathBuf,
}

const MAIN_RS: &str = r#"//! A Khachapuri function: a WASI command speaking the curl interface.
//!
//! - stdin is the request body;
//! - the environment holds REQUEST_METHOD, PATH_INFO (the path after the function's CID),
//!   QUERY_STRING, CONTENT_TYPE, each request header as HTTP_<NAME>, and the deployment's --env;
//! - stdout is the response: optional CGI headers (`Status: 201 Created`, `Content-Type: ...`), a blank
//!   line, then the body; without headers the answer is 200 text/plain;
//! - stderr goes to the owner's logs (`khachapuri logs`), never to the caller.

use std::io::{Read, Write};

fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let mut body = String::new();
    let _ = std::io::stdin().read_to_string(&mut body);
    let name = match body.trim() {
        "" => "world",
        name => name,
    };
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".into());
    // For the owner's eyes only: `khachapuri run` prints it, `khachapuri logs` shows it once deployed.
    eprintln!("{} {:?}: greeting {name}", var("REQUEST_METHOD"), var("PATH_INFO"));

    let mut out = std::io::stdout().lock();
    let _ = write!(out, "Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    let _ = writeln!(out, "{greeting}, {name}!");
}
"#;

const GITIGNORE: &str = "/target\n.env\n";

/// Writes the project and says what to do next.
pub fn new(args: NewArgs, json: bool) -> anyhow::Result<()> {
    let dir = &args.path;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{}`: a function's name starts with a letter and holds letters, digits, `-` and `_`, e.g. `khachapuri new greeter`",
            dir.display()
        );
    }
    if dir.exists() && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} already exists and is not empty; choose another name",
            dir.display()
        );
    }
    // Its own [workspace]: created inside another cargo workspace, it still builds on its own.
    let cargo_toml = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[workspace]

# Small modules upload and compile faster.
[profile.release]
opt-level = "s"
lto = true
strip = true
codegen-units = 1
"#
    );
    let src = dir.join("src");
    std::fs::create_dir_all(&src).with_context(|| format!("cannot create {}", src.display()))?;
    for (file, text) in [
        (dir.join("Cargo.toml"), cargo_toml.as_str()),
        (src.join("main.rs"), MAIN_RS),
        (dir.join(".gitignore"), GITIGNORE),
    ] {
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    let d = dir.display();
    if json {
        let value = serde_json::json!({ "name": name, "path": d.to_string() });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("created {d}: a function that greets the request body");
        println!("run it here:  khachapuri run {d} -d Ada");
        println!(
            "deploy it:    khachapuri deploy {d} --provider <label>   (with `khachapuri dev`: --provider dev)"
        );
    }
    Ok(())
}
