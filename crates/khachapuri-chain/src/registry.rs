//! Labels: validation like the Registry's, resolution Registry → Resolver → [`ProviderRecord`], and
//! registration (commit naming the resolver's predicted address, deploy it through the factory while the
//! commitment ages, register).

use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolEvent;
use khachapuri_bindings::{Registry, Resolver, ResolverFactory};

use crate::{Chain, ChainError, Receipt, Server, label_node, validate_label};

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

/// A step of [`Chain::register_label`] or [`Chain::register_provider`], for progress output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationStep {
    /// The commitment is on chain.
    Committed {
        /// The commitment.
        commitment: B256,
    },
    /// The resolver the commitment names is deployed ([`Chain::register_provider`] only).
    ResolverDeployed {
        /// Its address.
        resolver: Address,
    },
    /// Waiting for the commitment to age.
    Waiting {
        /// Seconds left.
        seconds_left: u64,
    },
    /// The label is registered.
    Registered,
}

impl Chain {
    /// Resolves `label` through the Registry and its Resolver. A label with no resolver, or whose resolver has
    /// no code (a commitment may name one before it is deployed), is unknown.
    pub async fn resolve_label(&self, label: &str) -> Result<ProviderRecord, ChainError> {
        validate_label(label)?;
        let registry = Registry::new(self.deployment().registry, self.provider());
        let resolver = registry.resolver(label_node(label)).call().await?;
        if resolver == Address::ZERO {
            return Err(ChainError::UnknownLabel(label.to_owned()));
        }
        let records = match Resolver::new(resolver, self.provider())
            .records()
            .call()
            .await
        {
            Ok(records) => records,
            Err(e) => {
                let err = ChainError::from(e);
                if !err.is_unavailable() && self.provider().get_code_at(resolver).await?.is_empty()
                {
                    return Err(ChainError::UnknownLabel(label.to_owned()));
                }
                return Err(err);
            }
        };
        // Our Resolver refuses a zero payee; another contract might answer one. A provider no key speaks
        // for is unusable, and a payer token made out to it would read as one for any provider.
        if records.payee_ == Address::ZERO {
            return Err(ChainError::Decode(format!(
                "the resolver of `{label}` ({resolver}) names no payee (the zero address): not a usable provider"
            )));
        }
        Ok(ProviderRecord {
            label: label.to_owned(),
            resolver,
            payee: records.payee_,
            server: Server::from_record(&records.server_),
            rsa_public_key_der: records.publicKeyDer,
            key_version: records.keyVersion,
        })
    }
    /// The labels of the providers that pay out to `payees`, from the Registry's `Registered` events and
    /// each label's resolver as it is now. A label counts only when the payee itself owns it: anyone may
    /// point a resolver at someone else's payee, and that must not put a name on it. A payee behind several
    /// labels gets the first registered; one with none is left out (text output then shows its address).
    pub async fn labels_of(
        &self,
        payees: &[Address],
    ) -> Result<std::collections::HashMap<Address, String>, ChainError> {
        use alloy::rpc::types::Filter;
        let mut labels = std::collections::HashMap::new();
        if payees.is_empty() {
            return Ok(labels);
        }
        let filter = Filter::new()
            .address(self.deployment().registry)
            .from_block(self.deployment().deployment_block)
            .event_signature(Registry::Registered::SIGNATURE_HASH);
        for log in self.provider().get_logs(&filter).await? {
            let Ok(registered) = Registry::Registered::decode_log_data(log.data()) else {
                continue;
            };
            if payees.contains(&registered.owner)
                && !labels.contains_key(&registered.owner)
                && let Ok(record) = self.resolve_label(&registered.label).await
                && record.payee == registered.owner
                && self.label_owner(&registered.label).await.ok() == Some(record.payee)
            {
                labels.insert(record.payee, registered.label);
            }
        }
        Ok(labels)
    }

    /// The owner of `label` (zero if unregistered).
    pub async fn label_owner(&self, label: &str) -> Result<Address, ChainError> {
        validate_label(label)?;
        Ok(Registry::new(self.deployment().registry, self.provider())
            .owner(label_node(label))
            .call()
            .await?)
    }

    /// Points the signer's `label` at `resolver`: e.g. after taking a label, whose seller's resolver the
    /// Registry clears.
    pub async fn set_label_resolver(
        &self,
        label: &str,
        resolver: Address,
    ) -> Result<Receipt, ChainError> {
        validate_label(label)?;
        let registry = Registry::new(self.deployment().registry, self.provider());
        Ok((&self
            .send(registry.setResolver(label_node(label), resolver))
            .await?)
            .into())
    }

    /// Where the factory puts the resolver that `deployer` deploys under `salt` (deployed or not). The salt is
    /// bound to its deployer: nobody else can take that address.
    pub async fn predict_resolver(
        &self,
        deployer: Address,
        salt: B256,
    ) -> Result<Address, ChainError> {
        let factory = ResolverFactory::new(self.deployment().resolver_factory, self.provider());
        Ok(factory.predict(deployer, salt).call().await?)
    }

    /// Deploys a resolver owned by the signer through the factory, under a random salt; returns its address.
    pub async fn deploy_resolver(
        &self,
        payee: Address,
        server: &Server,
        rsa_public_key_der: Bytes,
    ) -> Result<Address, ChainError> {
        self.deploy_resolver_with_salt(B256::random(), payee, server, rsa_public_key_der)
            .await
    }

    /// Deploys a resolver owned by the signer through the factory at
    /// [`predict_resolver`](Self::predict_resolver)`(signer, salt)`; returns its address.
    pub async fn deploy_resolver_with_salt(
        &self,
        salt: B256,
        payee: Address,
        server: &Server,
        rsa_public_key_der: Bytes,
    ) -> Result<Address, ChainError> {
        let factory = ResolverFactory::new(self.deployment().resolver_factory, self.provider());
        let receipt = self
            .send(factory.deploy_call(salt, payee, server.record().to_owned(), rsa_public_key_der))
            .await?;
        receipt
            .inner
            .logs()
            .iter()
            .filter(|log| log.address() == self.deployment().resolver_factory)
            .find_map(|log| ResolverFactory::ResolverDeployed::decode_log_data(log.data()).ok())
            .map(|e| e.resolver)
            .ok_or_else(|| {
                ChainError::Decode("the factory emitted no ResolverDeployed event".into())
            })
    }

    /// Points the signer's resolver at `server` (when it differs from the record).
    pub async fn set_server(
        &self,
        resolver: Address,
        server: &Server,
    ) -> Result<Receipt, ChainError> {
        let resolver = Resolver::new(resolver, self.provider());
        Ok((&self
            .send(resolver.setServer(server.record().to_owned()))
            .await?)
            .into())
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
        Ok(self.commit(label, resolver, secret).await?.0)
    }

    /// [`Chain::commit_label`], also returning when the commitment was recorded (unix seconds).
    async fn commit(
        &self,
        label: &str,
        resolver: Address,
        secret: B256,
    ) -> Result<(B256, u64), ChainError> {
        validate_label(label)?;
        let owner = self.address()?;
        let registry = Registry::new(self.deployment().registry, self.provider());
        let commitment = registry
            .makeCommitment(label.to_owned(), owner, resolver, secret)
            .call()
            .await?;
        let sent = self.send(registry.commit(commitment)).await;
        // The contract refuses to record a live commitment again (`CommitmentExists`). Someone who copied
        // ours from the mempool into an earlier transaction made that refusal, and did no harm: the
        // commitment stands, with a timestamp no later than ours would have had. Either way, its age counts
        // from the recorded timestamp.
        let recorded = registry
            .commitments(commitment)
            .call()
            .await
            .ok()
            .filter(|at| *at != U256::ZERO)
            .map(|at| at.saturating_to::<u64>());
        match (sent, recorded) {
            (Ok(_), Some(at)) => Ok((commitment, at)),
            (Err(e), Some(at)) => {
                let live = at.saturating_add(self.deployment().max_commitment_age)
                    >= self.block_timestamp().await?;
                if live { Ok((commitment, at)) } else { Err(e) }
            }
            (Err(e), None) => Err(e),
            // Sent, but the read failed or lagged: the latest block is no earlier than the commitment's.
            (Ok(_), None) => Ok((commitment, self.block_timestamp().await?)),
        }
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
        let (commitment, committed_at) = self.commit(label, resolver, secret).await?;
        progress(RegistrationStep::Committed { commitment });
        self.wait_for_commitment(committed_at, &mut progress)
            .await?;
        let receipt = self.reveal_label(label, resolver, secret).await?;
        progress(RegistrationStep::Registered);
        Ok(receipt)
    }

    /// A provider's whole registration, resolver included, in one commitment's wait: commit `label` naming
    /// the resolver's predicted address (random salt and secret), deploy that resolver (owned by the signer,
    /// with `payee`, `server` and the RSA key) while the commitment ages, register. Returns the resolver and
    /// the registration's receipt.
    pub async fn register_provider(
        &self,
        label: &str,
        payee: Address,
        server: &Server,
        rsa_public_key_der: Bytes,
        mut progress: impl FnMut(RegistrationStep),
    ) -> Result<(Address, Receipt), ChainError> {
        validate_label(label)?;
        let salt = B256::random();
        let predicted = self.predict_resolver(self.address()?, salt).await?;
        let secret = B256::random();
        let (commitment, committed_at) = self.commit(label, predicted, secret).await?;
        progress(RegistrationStep::Committed { commitment });
        let resolver = self
            .deploy_resolver_with_salt(salt, payee, server, rsa_public_key_der)
            .await?;
        if resolver != predicted {
            return Err(ChainError::Decode(format!(
                "the factory deployed the resolver at {resolver}, not at the predicted {predicted}"
            )));
        }
        progress(RegistrationStep::ResolverDeployed { resolver });
        self.wait_for_commitment(committed_at, &mut progress)
            .await?;
        let receipt = self.reveal_label(label, resolver, secret).await?;
        progress(RegistrationStep::Registered);
        Ok((resolver, receipt))
    }

    /// Waits until a commitment recorded at `committed_at` is old enough to reveal, reporting the seconds left.
    async fn wait_for_commitment(
        &self,
        committed_at: u64,
        progress: &mut impl FnMut(RegistrationStep),
    ) -> Result<(), ChainError> {
        // One second more than the minimum: the next block's timestamp is at least this one's + 1.
        let ready_at = committed_at + self.deployment().min_commitment_age + 1;
        loop {
            let wall = khachapuri_protocol::unix_now();
            let now = wall.max(self.block_timestamp().await?);
            if now >= ready_at {
                return Ok(());
            }
            let left = ready_at - now;
            progress(RegistrationStep::Waiting { seconds_left: left });
            tokio::time::sleep(Duration::from_secs(left.min(1))).await;
        }
    }
}
