//! Labels: validation like the Registry's, resolution Registry → Resolver → [`ProviderRecord`], and
//! registration (resolver through the factory, commit, wait, register).

use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, keccak256};
use alloy::sol_types::SolEvent;
use khachapuri_bindings::{Registry, Resolver, ResolverFactory, TUNNEL_MARKER};

use crate::{Chain, ChainError, Receipt};

/// Where a provider's agent answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// A base URL (`https://host:port`) the gateway forwards to.
    Url(String),
    /// Reachable only through the gateway's WebSocket tunnel.
    Tunnel,
}

impl Server {
    /// The on-chain `server` record: the URL, or the tunnel marker.
    pub fn record(&self) -> &str {
        match self {
            Self::Url(url) => url,
            Self::Tunnel => TUNNEL_MARKER,
        }
    }

    /// Reads an on-chain `server` record.
    pub fn from_record(record: &str) -> Self {
        if record == TUNNEL_MARKER {
            Self::Tunnel
        } else {
            Self::Url(record.to_owned())
        }
    }
}

/// What a label resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The label (`alice`).
    pub label: String,
    /// Its resolver contract.
    pub resolver: Address,
    /// Where the provider is paid, and whose key signs its tunnel handshakes.
    pub payee: Address,
    /// Where its agent answers.
    pub server: Server,
    /// Its RSA public key, DER SubjectPublicKeyInfo.
    pub rsa_public_key_der: Bytes,
    /// The key's version, from 1, bumped on each rotation.
    pub key_version: u64,
}

/// A step of [`Chain::register_label`], for progress output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationStep {
    /// The commitment is on chain.
    Committed {
        /// The commitment.
        commitment: B256,
    },
    /// Waiting for the commitment to age.
    Waiting {
        /// Seconds left.
        seconds_left: u64,
    },
    /// The label is registered.
    Registered,
}

/// Checks `label` like the Registry: `[a-z0-9-]`, 1..63 bytes, no leading or trailing `-`.
pub fn validate_label(label: &str) -> Result<(), ChainError> {
    let invalid = |reason| {
        Err(ChainError::InvalidLabel {
            label: label.to_owned(),
            reason,
        })
    };
    if label.is_empty() {
        return invalid("it is empty");
    }
    if label.len() > 63 {
        return invalid("it is longer than 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("only lower-case letters, digits and `-` are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return invalid("it must not start or end with `-`");
    }
    Ok(())
}

/// The registry key of a label: `keccak256(label)`.
pub fn label_node(label: &str) -> B256 {
    keccak256(label.as_bytes())
}

impl Chain {
    /// Resolves `label` through the Registry and its Resolver.
    pub async fn resolve_label(&self, label: &str) -> Result<ProviderRecord, ChainError> {
        validate_label(label)?;
        let registry = Registry::new(self.deployment().registry, self.provider());
        let resolver = registry.resolver(label_node(label)).call().await?;
        if resolver == Address::ZERO {
            return Err(ChainError::UnknownLabel(label.to_owned()));
        }
        let records = Resolver::new(resolver, self.provider())
            .records()
            .call()
            .await?;
        Ok(ProviderRecord {
            label: label.to_owned(),
            resolver,
            payee: records.payee_,
            server: Server::from_record(&records.server_),
            rsa_public_key_der: records.publicKeyDer,
            key_version: records.keyVersion,
        })
    }

    /// The owner of `label` (zero if unregistered).
    pub async fn label_owner(&self, label: &str) -> Result<Address, ChainError> {
        validate_label(label)?;
        Ok(Registry::new(self.deployment().registry, self.provider())
            .owner(label_node(label))
            .call()
            .await?)
    }

    /// Deploys a resolver owned by the signer through the factory; returns its address.
    pub async fn deploy_resolver(
        &self,
        payee: Address,
        server: &Server,
        rsa_public_key_der: Bytes,
    ) -> Result<Address, ChainError> {
        let factory = ResolverFactory::new(self.deployment().resolver_factory, self.provider());
        let receipt = self
            .send(factory.deploy_call(payee, server.record().to_owned(), rsa_public_key_der))
            .await?;
        receipt
            .inner
            .logs()
            .iter()
            .find_map(|log| ResolverFactory::ResolverDeployed::decode_log_data(log.data()).ok())
            .map(|e| e.resolver)
            .ok_or_else(|| {
                ChainError::Decode("the factory emitted no ResolverDeployed event".into())
            })
    }

    /// Points the signer's resolver at `server` (when it differs from the record).
    pub async fn set_server(&self, resolver: Address, server: &Server) -> Result<Receipt, ChainError> {
        let resolver = Resolver::new(resolver, self.provider());
        Ok((&self.send(resolver.setServer(server.record().to_owned())).await?).into())
    }

    /// Rotates the RSA key the signer's resolver publishes (the resolver bumps its version).
    pub async fn set_rsa_key(
        &self,
        resolver: Address,
        rsa_public_key_der: Bytes,
    ) -> Result<Receipt, ChainError> {
        let resolver = Resolver::new(resolver, self.provider());
        Ok((&self.send(resolver.setRsaKey(rsa_public_key_der)).await?).into())
    }

    /// Commits to registering `label` to the signer with `resolver` under `secret`; returns the commitment.
    pub async fn commit_label(
        &self,
        label: &str,
        resolver: Address,
        secret: B256,
    ) -> Result<B256, ChainError> {
        validate_label(label)?;
        let owner = self.address()?;
        let registry = Registry::new(self.deployment().registry, self.provider());
        let commitment = registry
            .makeCommitment(label.to_owned(), owner, resolver, secret)
            .call()
            .await?;
        self.send(registry.commit(commitment)).await?;
        Ok(commitment)
    }

    /// Reveals a commitment made by [`Chain::commit_label`], registering `label` to the signer.
    pub async fn reveal_label(
        &self,
        label: &str,
        resolver: Address,
        secret: B256,
    ) -> Result<Receipt, ChainError> {
        validate_label(label)?;
        let owner = self.address()?;
        let registry = Registry::new(self.deployment().registry, self.provider());
        Ok(Receipt::from(
            &self
                .send(registry.register(label.to_owned(), owner, resolver, secret))
                .await?,
        ))
    }

    /// The whole registration: commit under a random secret, wait `minCommitmentAge` (reporting progress),
    /// register. The label is owned by the signer and resolves through `resolver`.
    pub async fn register_label(
        &self,
        label: &str,
        resolver: Address,
        mut progress: impl FnMut(RegistrationStep),
    ) -> Result<Receipt, ChainError> {
        validate_label(label)?;
        let secret = B256::random();
        let commitment = self.commit_label(label, resolver, secret).await?;
        progress(RegistrationStep::Committed { commitment });
        let committed_at = self.block_timestamp().await?;
        // One second more than the minimum: the next block's timestamp is at least this one's + 1.
        let ready_at = committed_at + self.deployment().min_commitment_age + 1;
        loop {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let now = wall.max(self.block_timestamp().await?);
            if now >= ready_at {
                break;
            }
            let left = ready_at - now;
            progress(RegistrationStep::Waiting { seconds_left: left });
            tokio::time::sleep(Duration::from_secs(left.min(1))).await;
        }
        let receipt = self.reveal_label(label, resolver, secret).await?;
        progress(RegistrationStep::Registered);
        Ok(receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_validated_like_the_contract() {
        for ok in ["alice", "a", "a-b", "0", "x1-2-3", &"a".repeat(63)] {
            assert!(validate_label(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Alice",
            "a.b",
            "a_b",
            "ä",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(
                matches!(validate_label(bad), Err(ChainError::InvalidLabel { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn servers_round_trip_through_records() {
        assert_eq!(Server::from_record("tunnel:"), Server::Tunnel);
        assert_eq!(Server::Tunnel.record(), "tunnel:");
        let url = Server::Url("https://alice.example:8443".into());
        assert_eq!(Server::from_record(url.record()), url);
    }
}
