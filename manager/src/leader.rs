//! Leader-only work: the orchestrator, the scheduler and the node monitor
//! run on the Raft leader (as in SwarmKit) and stop when it loses leadership.

use std::sync::Arc;

use crate::dispatcher::Dispatcher;
use crate::proposer::Proposer;
use crate::raft::RaftNode;
use crate::store::Store;
use crate::{orchestrator, rolemanager, scheduler};
use tokio_util::sync::CancellationToken;

/// Starts and stops the leader's controllers as leadership comes and goes.
pub async fn supervise(
    raft: RaftNode,
    store: Arc<Store>,
    dispatcher: Dispatcher,
    shutdown: CancellationToken,
) {
    let me = raft.node_id();
    let mut leader = raft.leader_watch();
    let mut running: Option<CancellationToken> = None;
    loop {
        let is_leader = *leader.borrow_and_update() == Some(me);
        match (is_leader, running.is_some()) {
            (true, false) => {
                tracing::info!("this node is the leader: starting controllers");
                let token = shutdown.child_token();
                let proposer: Arc<dyn Proposer> = Arc::new(raft.clone());
                tokio::spawn(orchestrator::run(
                    store.clone(),
                    proposer.clone(),
                    token.clone(),
                ));
                tokio::spawn(scheduler::run(store.clone(), proposer, token.clone()));
                tokio::spawn(rolemanager::run(raft.clone(), store.clone(), token.clone()));
                let d = dispatcher.clone();
                let t = token.clone();
                tokio::spawn(async move { d.run_node_monitor(t).await });
                let d = dispatcher.clone();
                let t = token.clone();
                tokio::spawn(async move { d.run_gossip_keys(t).await });
                running = Some(token);
            }
            (false, true) => {
                tracing::info!("leadership lost: stopping controllers");
                if let Some(t) = running.take() {
                    t.cancel();
                }
            }
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = leader.changed() => if r.is_err() { break },
        }
    }
    if let Some(t) = running {
        t.cancel();
    }
}
