//! Group commit: many channels' updates share one fsync, and none is acknowledged before it.
//!
//! Writers append records to a queue and get a [`Ticket`] holding a sequence number. One
//! committer thread takes everything queued (up to [`MAX_BATCH`]), writes it in one redb
//! transaction with immediate durability, and then raises the durable sequence number; a ticket
//! resolves once that number reaches its own. A caller serves or acknowledges a payment only
//! after [`Ticket::wait`] returned `Ok`.
//!
//! A failed commit poisons the store: that batch's and every later ticket get the error, since
//! nothing after a lost write may be acknowledged. The process must restart and reload.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use redb::Database;

use super::{RecordWrite, StoreError};

/// Most records written in one transaction.
pub const MAX_BATCH: usize = 4096;
/// When a commit would carry fewer than [`GATHER_BELOW`] writes, wait this long for more first
/// (like PostgreSQL's `commit_delay`): under load it turns many small fsyncs into one, at the
/// cost of at most this much added latency.
pub const GATHER_WINDOW: std::time::Duration = std::time::Duration::from_micros(300);
/// Batch size below which the committer waits [`GATHER_WINDOW`] for company.
pub const GATHER_BELOW: usize = 32;

#[derive(Debug, Default)]
struct State {
    queue: Vec<RecordWrite>,
    /// Sequence number of the newest submitted write.
    submitted: u64,
    /// Every write up to this sequence number is on disk.
    durable: u64,
    failed: Option<StoreError>,
    closed: bool,
    /// The committer sleeps on `work`; only then does a submit need to wake it (a syscall).
    committer_idle: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
    durable: Condvar,
    /// Async waiters: bumped whenever `durable`, `failed` or `closed` changes.
    progress: tokio::sync::watch::Sender<()>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            work: Condvar::new(),
            durable: Condvar::new(),
            progress: tokio::sync::watch::Sender::new(()),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only plain counters behind; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A pending write: resolves once its batch is durable.
#[derive(Debug)]
#[must_use = "a write is durable only once its ticket resolved Ok"]
pub struct Ticket {
    seq: u64,
    shared: Arc<Shared>,
}

impl Ticket {
    /// Blocks until the write is on disk (or the store failed).
    pub fn wait(self) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        loop {
            if let Some(outcome) = self.outcome(&state) {
                return outcome;
            }
            state = self
                .shared
                .durable
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Waits without blocking a thread (for async servers): resolves like [`Ticket::wait`].
    pub async fn durable(self) -> Result<(), StoreError> {
        // Subscribe before looking, so a commit between the look and the await is not missed.
        let mut progress = self.shared.progress.subscribe();
        loop {
            if let Some(outcome) = self.outcome(&self.shared.lock()) {
                return outcome;
            }
            if progress.changed().await.is_err() {
                return Err(StoreError::CommitterGone);
            }
        }
    }

    fn outcome(&self, state: &State) -> Option<Result<(), StoreError>> {
        if state.durable >= self.seq {
            return Some(Ok(()));
        }
        if let Some(error) = &state.failed {
            return Some(Err(error.clone()));
        }
        if state.closed && state.queue.is_empty() {
            return Some(Err(StoreError::CommitterGone));
        }
        None
    }
}

/// The committer thread and its queue.
#[derive(Debug)]
pub struct GroupCommitter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommitter {
    /// Starts the committer over `db`.
    pub fn start(db: Arc<Database>) -> Self {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("m2m-group-commit".into())
            .spawn(move || run(&db, &worker))
            .expect("spawn the group-commit thread");
        Self {
            shared,
            thread: Some(thread),
        }
    }

    /// Queues a write.
    pub fn submit(&self, write: RecordWrite) -> Ticket {
        let mut state = self.shared.lock();
        state.queue.push(write);
        state.submitted += 1;
        let seq = state.submitted;
        let wake = state.committer_idle;
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
        Ticket {
            seq,
            shared: self.shared.clone(),
        }
    }
}

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        self.shared.lock().closed = true; // the thread finishes what is queued, then exits
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &Database, shared: &Shared) {
    loop {
        let (batch, last_seq) = {
            let mut state = shared.lock();
            while state.queue.is_empty() && !state.closed {
                state.committer_idle = true;
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                state.committer_idle = false;
            }
            if state.queue.is_empty() {
                shared.durable.notify_all();
                shared.progress.send_replace(());
                return;
            }
            if state.queue.len() < GATHER_BELOW && !state.closed {
                drop(state);
                std::thread::sleep(GATHER_WINDOW);
                state = shared.lock();
            }
            let take = state.queue.len().min(MAX_BATCH);
            let batch: Vec<RecordWrite> = state.queue.drain(..take).collect();
            let last_seq = state.submitted - state.queue.len() as u64;
            (batch, last_seq)
        };
        let outcome = commit(db, &batch);
        let mut state = shared.lock();
        match outcome {
            Ok(()) if state.failed.is_none() => state.durable = last_seq,
            Ok(()) => {}
            Err(error) => state.failed = Some(error),
        }
        drop(state);
        shared.durable.notify_all();
        shared.progress.send_replace(());
    }
}

/// Writes a batch in one transaction. A channel's later record supersedes its earlier ones
/// (callers serialise each channel's updates), so only the last one per channel is written.
fn commit(db: &Database, batch: &[RecordWrite]) -> Result<(), StoreError> {
    let mut newest: HashMap<(usize, [u8; 32]), &RecordWrite> = HashMap::with_capacity(batch.len());
    for write in batch {
        newest.insert((write.kind(), write.channel().0), write);
    }
    let txn = db.begin_write().map_err(StoreError::from_redb)?;
    {
        let mut tables = HashMap::new();
        for ((kind, id), write) in newest {
            let table = match tables.entry(kind) {
                Entry::Occupied(open) => open.into_mut(),
                Entry::Vacant(slot) => slot.insert(
                    txn.open_table(write.table())
                        .map_err(StoreError::from_redb)?,
                ),
            };
            table
                .insert(&id, write.encode().as_slice())
                .map_err(StoreError::from_redb)?;
        }
    }
    txn.commit().map_err(StoreError::from_redb) // default durability: immediate (fsync)
}
