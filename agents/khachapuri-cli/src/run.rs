//! `khachapuri run`: runs a function here, through the runtime and the curl interface a provider uses,
//! under the limits `deploy` would sign: no chain, no IPFS, no payment. The program's stderr shows on
//! stderr, as `khachapuri logs` would show it from a provider.

use std::io::Write;

use anyhow::{anyhow, bail};
use khachapuri_provider::ApiError;
use khachapuri_runtime::{Request, RunLimits, Runtime, RuntimeConfig, Tiering};

use crate::deploy::{EnvArgs, LimitArgs, ProgramArgs};
use crate::request::{Answer, RequestArgs};

/// `khachapuri run` options.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    program: ProgramArgs,
    #[command(flatten)]
    request: RequestArgs,
    /// The path and query after the function's CID, e.g. `/items/7?color=red`.
    #[arg(long = "path", value_name = "PATH", default_value = "/")]
    request_path: String,
    #[command(flatten)]
    env: EnvArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Runs the program once and prints its answer like `call`.
pub async fn run(args: RunArgs, json: bool) -> anyhow::Result<()> {
    let env = args.env.read()?;
    let limits = args.limits.limits()?;
    let body = args.request.body()?;
    let method = args.request.method(body.is_some())?;
    let target = args.request_path.as_str();
    let (path_info, query) = target.split_once('?').unwrap_or((target, ""));
    if !path_info.starts_with('/') {
        bail!("--path `{target}`: start it with /, e.g. --path /items/7?color=red");
    }
    let package = args.program.package()?;
    let run_limits = RunLimits {
        memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
        deadline: std::time::Duration::from_millis(limits.timeout_ms),
        output_bytes: usize::try_from(limits.output_bytes).unwrap_or(usize::MAX),
    };
    // The runtime's caps are this run's limits, so nothing is clamped below what deploy would sign.
    let mut config = RuntimeConfig {
        tiering: Tiering::Baseline,
        max_instances: 1,
        ..RuntimeConfig::default()
    };
    config.limits.memory_bytes = run_limits.memory_bytes;
    config.limits.deadline = run_limits.deadline;
    config.limits.output_bytes = run_limits.output_bytes;
    let runtime = Runtime::new(config).map_err(|e| anyhow!("cannot start the runtime: {e}"))?;
    let program = runtime
        .load("local", &package.zip, Some(&package.entry))
        .map_err(|e| anyhow!("{}: {e}", package.entry))?;
    let request = Request {
        method: method.to_string(),
        path_info: if path_info == "/" {
            String::new()
        } else {
            path_info.to_owned()
        },
        query_string: query.to_owned(),
        headers: args.request.headers()?,
        body: body.unwrap_or_default(),
        env: env.into_iter().collect(),
    };
    let (answer, stderr, failure) = match program.run_async(request, run_limits).await {
        Ok(out) => {
            let answer = Answer {
                version: "HTTP/1.1".into(),
                response: out.response,
            };
            (answer, out.stderr, None)
        }
        Err(failure) => {
            // The error body a provider answers, from the one mapping the agent uses.
            let error = ApiError::from(failure.error);
            let answer = Answer {
                version: "HTTP/1.1".into(),
                response: khachapuri_runtime::Response {
                    status: error.status.as_u16(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: error.body(),
                },
            };
            (answer, failure.stderr, Some(error.message))
        }
    };
    // What a provider keeps for the owner's logs, shown at once: this is the owner's own run.
    if !stderr.is_empty() {
        let mut err = std::io::stderr().lock();
        err.write_all(&stderr)?;
        if !stderr.ends_with(b"\n") {
            writeln!(err)?;
        }
    }
    if json {
        let mut value = answer.to_json();
        value["stderr"] = String::from_utf8_lossy(&stderr).into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if failure.is_none() || args.request.include {
        answer.print(args.request.include)?;
    }
    if let Some(message) = failure {
        bail!(
            "HTTP {}: {message}; a provider answers the same, and charges for it (the program's stderr is above)",
            answer.status()
        );
    }
    Ok(())
}
