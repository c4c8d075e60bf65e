//! Group commit: many channels' updates share one fsync, and none is acknowledged before it.
//!
//! Writers hand records to a single committer thread and get a [`Ticket`]. The thread takes
//! everything queued (up to [`MAX_BATCH`]), writes it in one redb transaction with immediate
//! durability, and only after the commit returned resolves the tickets of that batch. A caller
//! serves or acknowledges a payment only after [`Ticket::wait`] returned `Ok`.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use redb::Database;

use super::{PAYEE_TABLE, PAYER_TABLE, RecordWrite, StoreError};

/// Most records written in one transaction.
pub const MAX_BATCH: usize = 4096;

type Reply = SyncSender<Result<(), StoreError>>;

/// A pending write: resolves once its batch is durable.
#[derive(Debug)]
#[must_use = "a write is durable only once its ticket resolved Ok"]
pub struct Ticket {
    reply: Receiver<Result<(), StoreError>>,
}

impl Ticket {
    /// Blocks until the write is on disk (or failed).
    pub fn wait(self) -> Result<(), StoreError> {
        self.reply.recv().unwrap_or(Err(StoreError::CommitterGone))
    }
}

/// The committer thread and its queue.
#[derive(Debug)]
pub struct GroupCommitter {
    queue: Option<Sender<(RecordWrite, Reply)>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommitter {
    /// Starts the committer over `db`.
    pub fn start(db: Arc<Database>) -> Self {
        let (queue, incoming) = mpsc::channel::<(RecordWrite, Reply)>();
        let thread = std::thread::Builder::new()
            .name("m2m-group-commit".into())
            .spawn(move || run(&db, &incoming))
            .expect("spawn the group-commit thread");
        Self {
            queue: Some(queue),
            thread: Some(thread),
        }
    }

    /// Queues a write.
    pub fn submit(&self, write: RecordWrite) -> Ticket {
        let (reply, ticket) = mpsc::sync_channel(1);
        if let Some(queue) = &self.queue {
            // If the thread is gone, the dropped reply resolves the ticket as an error.
            let _ = queue.send((write, reply));
        }
        Ticket { reply: ticket }
    }
}

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        self.queue.take(); // closing the queue lets the thread finish what is queued and exit
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &Database, incoming: &Receiver<(RecordWrite, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = incoming.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let outcome = commit(db, &batch);
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(outcome.clone());
        }
    }
}

fn commit(db: &Database, batch: &[(RecordWrite, Reply)]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(StoreError::from_redb)?;
    {
        let mut payers = txn.open_table(PAYER_TABLE).map_err(StoreError::from_redb)?;
        let mut payees = txn.open_table(PAYEE_TABLE).map_err(StoreError::from_redb)?;
        for (write, _) in batch {
            match write {
                RecordWrite::Payer(id, record) => {
                    payers
                        .insert(&id.0, super::records::encode_payer(record).as_slice())
                        .map_err(StoreError::from_redb)?;
                }
                RecordWrite::Payee(id, record) => {
                    payees
                        .insert(&id.0, super::records::encode_payee(record).as_slice())
                        .map_err(StoreError::from_redb)?;
                }
            }
        }
    }
    txn.commit().map_err(StoreError::from_redb) // default durability: immediate (fsync)
}
