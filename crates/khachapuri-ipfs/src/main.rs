//! `khachapuri-ipfs`: runs the embedded node, or adds / fetches a file with it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use khachapuri_ipfs::{Fetcher, FsBlockstore, Node, Source, parse_cid};

#[derive(Parser)]
#[command(about = "Khachapuri's embedded IPFS node")]
struct Args {
    /// Blockstore directory.
    #[arg(long, env = "KHACHAPURI_IPFS_REPO", default_value = ".khachapuri/ipfs")]
    repo: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the trustless gateway and Kubo RPC on 127.0.0.1:PORT.
    Serve {
        /// Port (0 = any free port).
        #[arg(long, default_value_t = 5001)]
        port: u16,
    },
    /// Import a file into the blockstore and print its CID.
    Add {
        /// The file.
        path: PathBuf,
    },
    /// Print a file from the blockstore, verified.
    Cat {
        /// Its CID.
        cid: String,
        /// Refuse files larger than this.
        #[arg(long, default_value_t = 1 << 30)]
        max_bytes: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = FsBlockstore::open(&args.repo)
        .with_context(|| format!("opening {}", args.repo.display()))?;
    match args.command {
        Command::Serve { port } => {
            let node = Node::start(store, port)
                .await
                .context("binding the HTTP server")?;
            println!("serving {} at {}", args.repo.display(), node.url());
            khachapuri_process::shutdown_signal().await;
            node.stop().await?;
        }
        Command::Add { path } => {
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let imported = store.put_reader(std::io::BufReader::new(file))?;
            println!("{}", imported.cid);
        }
        Command::Cat { cid, max_bytes } => {
            let cid = parse_cid(&cid)?;
            let bytes = Fetcher::new(vec![Source::Local(store)])
                .get(&cid, max_bytes)
                .await?;
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(())
}
