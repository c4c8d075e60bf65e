//! The devices of a run: honest sellers (restartable from their stores), an overcharging seller,
//! and buyers, each with its own wallet and data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use m2m_node::buyer::{Buyer, BuyerOptions};
use m2m_node::datadir::DataDir;
use m2m_node::seller::sensor::SimulatedSensor;
use m2m_node::seller::{Seller, SellerConfig, ServerHandle, serve};
use m2m_node::store::ChannelStore;
use m2m_wallet::{DeviceKeys, DeviceSeed, Network, SeedLength};

use crate::SimError;

/// A fresh device wallet (12 words, regtest).
pub fn new_device() -> Result<Arc<DeviceKeys>, SimError> {
    let seed =
        DeviceSeed::generate(SeedLength::Words12).map_err(|e| SimError::Setup(e.to_string()))?;
    Ok(Arc::new(
        DeviceKeys::derive(&seed, Network::Regtest).map_err(|e| SimError::Setup(e.to_string()))?,
    ))
}

/// Opens a device's data directory and channel store. The directory lock is released at once:
/// within one simulator process the store itself is the single opener, and a restarted seller
/// must be able to open it again.
pub fn open_store(dir: &Path) -> Result<ChannelStore, SimError> {
    let data_dir = DataDir::open(dir).map_err(|e| SimError::Setup(e.to_string()))?;
    ChannelStore::open(&data_dir).map_err(|e| SimError::Setup(e.to_string()))
}

/// An honest seller that can be stopped and restarted from its store on the same port.
pub struct SimSeller {
    /// Its wallet.
    pub keys: Arc<DeviceKeys>,
    dir: PathBuf,
    config: SellerConfig,
    /// Where it listens (fixed after the first start).
    pub addr: SocketAddr,
    running: Option<(Arc<Seller>, ServerHandle, tokio::task::JoinHandle<()>)>,
    /// Times it was restarted.
    pub restarts: u32,
}

impl SimSeller {
    /// Starts a seller with `config` (its `listen` may be port 0).
    pub async fn start(
        keys: Arc<DeviceKeys>,
        dir: PathBuf,
        config: SellerConfig,
    ) -> Result<Self, SimError> {
        let mut seller = Self {
            keys,
            dir,
            addr: config.listen,
            config,
            running: None,
            restarts: 0,
        };
        seller.launch().await?;
        Ok(seller)
    }

    async fn launch(&mut self) -> Result<(), SimError> {
        let store = open_store(&self.dir)?;
        let mut config = self.config.clone();
        config.listen = self.addr;
        let sensor = Arc::new(SimulatedSensor::new(&format!(
            "{:#x}",
            m2m_wallet::Signer::evm_address(&*self.keys)
        )));
        let seller = Seller::start(config, self.keys.clone(), store, sensor)
            .await
            .map_err(|e| SimError::Setup(format!("seller: {e}")))?;
        let server = serve(seller.clone(), None, m2m_node::tls::ServerTls::Plain)
            .await
            .map_err(|e| SimError::Setup(format!("seller: {e}")))?;
        self.addr = server.local_addr;
        let claimer = tokio::spawn(seller.clone().run_claimer());
        self.running = Some((seller, server, claimer));
        Ok(())
    }

    /// The running seller.
    pub fn seller(&self) -> Option<&Arc<Seller>> {
        self.running.as_ref().map(|(seller, ..)| seller)
    }

    /// Stops serving and closes the store (as a crash would, minus the OS: nothing in memory
    /// survives), stays down for `down`, then starts again from the store.
    pub async fn restart(&mut self, down: Duration) -> Result<(), SimError> {
        self.stop().await?;
        tokio::time::sleep(down).await;
        self.launch().await?;
        self.restarts += 1;
        Ok(())
    }

    /// Stops serving and claiming, and closes the store.
    pub async fn stop(&mut self) -> Result<(), SimError> {
        let Some((seller, server, claimer)) = self.running.take() else {
            return Ok(());
        };
        claimer.abort();
        let _ = claimer.await;
        server.shutdown().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seller = seller;
        loop {
            match Arc::try_unwrap(seller) {
                Ok(inner) => {
                    drop(inner); // closes the channel store
                    return Ok(());
                }
                Err(still_shared) if Instant::now() < deadline => {
                    seller = still_shared;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => {
                    return Err(SimError::Setup(
                        "a stopped seller is still referenced".into(),
                    ));
                }
            }
        }
    }
}

/// A buying device: one wallet and store, paying by channel or (when told to) by `exact`.
pub struct SimBuyer {
    /// Its wallet.
    pub keys: Arc<DeviceKeys>,
    /// Pays with channels.
    pub buyer: Arc<Buyer>,
    /// Pays with `exact` only.
    pub exact: Arc<Buyer>,
    /// Its channel store (read by the conservation check).
    pub store: Arc<ChannelStore>,
}

impl SimBuyer {
    /// A buyer with its own data directory `dir`, spending within `caps` (shared by its
    /// voucher and `exact` buyers, kept in its store).
    pub fn new(
        keys: Arc<DeviceKeys>,
        dir: &Path,
        options: BuyerOptions,
        caps: Option<m2m_node::budget::BudgetCaps>,
    ) -> Result<Self, SimError> {
        let store = Arc::new(open_store(dir)?);
        let caps: Vec<_> = caps
            .map(|caps| (m2m_node::events::Leg::Evm, caps))
            .into_iter()
            .collect();
        let budgets = m2m_node::budget::Budgets::load((*store).clone(), &caps)
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let options = BuyerOptions {
            budget: Some(Arc::new(budgets)),
            ..options
        };
        let exact = BuyerOptions {
            prefer: vec!["exact".into()],
            ..options.clone()
        };
        Ok(Self {
            buyer: Arc::new(Buyer::new(keys.clone(), store.clone(), options)),
            exact: Arc::new(Buyer::new(keys.clone(), store.clone(), exact)),
            keys,
            store,
        })
    }
}
