//! `deployments/<chainId>.json`: where the contracts of one chain live.

use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

use crate::ChainError;

/// The contracts of one chain, as written by the deploy script to `deployments/<chainId>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The chain id.
    pub chain_id: u64,
    /// The block of the first contract's deployment (where to start reading events).
    pub deployment_block: u64,
    /// The USDC token.
    pub usdc: Address,
    /// The label registry.
    pub registry: Address,
    /// The resolver factory.
    pub resolver_factory: Address,
    /// The implementation the factory clones.
    pub resolver_implementation: Address,
    /// The escrow.
    pub escrow: Address,
    /// Seconds before a price cut or a release of reserve takes effect (never zero).
    pub withdrawal_delay: u64,
    /// Youngest age of a label commitment at registration, seconds.
    pub min_commitment_age: u64,
    /// Oldest age of a label commitment at registration, seconds.
    pub max_commitment_age: u64,
    /// Whether `usdc` is the mintable TestUSDC (local networks only).
    pub test_token: bool,
}

impl Deployment {
    /// The file of `chain_id` in `dir`: `<dir>/<chainId>.json`.
    pub fn path(dir: &Path, chain_id: u64) -> PathBuf {
        dir.join(format!("{chain_id}.json"))
    }

    /// Reads `<dir>/<chainId>.json` and checks that it is for `chain_id`.
    pub fn load(dir: &Path, chain_id: u64) -> Result<Self, ChainError> {
        let path = Self::path(dir, chain_id);
        let deployment = Self::read(&path)?;
        if deployment.chain_id != chain_id {
            return Err(ChainError::Deployment(format!(
                "{} is for chain {}, not {chain_id}",
                path.display(),
                deployment.chain_id
            )));
        }
        Ok(deployment)
    }

    /// Reads one deployment file.
    pub fn read(path: &Path) -> Result<Self, ChainError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ChainError::Deployment(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| ChainError::Deployment(format!("{} is malformed: {e}", path.display())))
    }

    /// Writes the deployment as `<dir>/<chainId>.json` (pretty JSON, like the deploy script).
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ChainError> {
        let path = Self::path(dir, self.chain_id);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ChainError::Deployment(e.to_string()))?;
        std::fs::write(&path, text)
            .map_err(|e| ChainError::Deployment(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_a_deployment_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let written = Deployment {
            chain_id: 31337,
            deployment_block: 7,
            usdc: Address::repeat_byte(1),
            registry: Address::repeat_byte(2),
            resolver_factory: Address::repeat_byte(3),
            resolver_implementation: Address::repeat_byte(4),
            escrow: Address::repeat_byte(5),
            withdrawal_delay: 300,
            min_commitment_age: 1,
            max_commitment_age: 86_400,
            test_token: true,
        };
        let path = written.write(dir.path())?;
        assert_eq!(path, Deployment::path(dir.path(), 31337));
        assert_eq!(Deployment::load(dir.path(), 31337)?, written);
        assert!(matches!(
            Deployment::load(dir.path(), 999_999),
            Err(ChainError::Deployment(_))
        ));
        Ok(())
    }
}
