//! In-memory copies of the immutable catalog rows rating prices with:
//! published plan versions (with the wire price of each charge, for the
//! `UsageCharge.price` snapshot) and meters. Both never change once they exist
//! (a database trigger enforces it), so a cached entry is never stale; only
//! hits are cached, so a version published or a meter created later is found
//! on the next lookup.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use prost::Message as _;
use sqlx::PgPool;
use tally_domain::meter::Meter;
use tally_proto::rating as proto;

use crate::catalog::store::{self, PublishedVersion};

/// A published plan version and the price snapshots of its charges.
#[derive(Debug)]
pub struct VersionEntry {
    /// The validated version.
    pub published: PublishedVersion,
    /// Charge key → the `Price` exactly as the version's author wrote it.
    pub prices: HashMap<String, proto::Price>,
}

/// The cache; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct CatalogCache {
    pool: PgPool,
    versions: Arc<RwLock<HashMap<String, Arc<VersionEntry>>>>,
    meters: Arc<RwLock<HashMap<String, Arc<Meter>>>>,
}

impl CatalogCache {
    /// An empty cache reading from `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            versions: Arc::default(),
            meters: Arc::default(),
        }
    }

    /// The published (or archived) version `id`; `None` if unknown or a draft.
    pub async fn version(&self, id: &str) -> Result<Option<Arc<VersionEntry>>, sqlx::Error> {
        if let Some(entry) = self
            .versions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return Ok(Some(Arc::clone(entry)));
        }
        let Some(published) = store::published_version(&self.pool, id).await? else {
            return Ok(None);
        };
        let content = store::plan_version_content(&self.pool, id).await?;
        let spec = match content {
            Some(bytes) => proto::PlanVersionSpec::decode(bytes.as_slice())
                .map_err(|error| sqlx::Error::Decode(error.into()))?,
            None => proto::PlanVersionSpec::default(),
        };
        let prices = spec
            .charges
            .into_iter()
            .filter_map(|charge| charge.price.map(|price| (charge.key, price)))
            .collect();
        let entry = Arc::new(VersionEntry { published, prices });
        self.versions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), Arc::clone(&entry));
        Ok(Some(entry))
    }

    /// The meter with `code`, if any.
    pub async fn meter(&self, code: &str) -> Result<Option<Arc<Meter>>, sqlx::Error> {
        if let Some(meter) = self
            .meters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(code)
        {
            return Ok(Some(Arc::clone(meter)));
        }
        let Some(meter) = store::meter(&self.pool, code).await? else {
            return Ok(None);
        };
        let meter = Arc::new(meter);
        self.meters
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(code.to_owned(), Arc::clone(&meter));
        Ok(Some(meter))
    }
}
