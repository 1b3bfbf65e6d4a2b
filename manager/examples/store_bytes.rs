//! What a pod costs in one manager's store, in heap bytes: fills a
//! [`Store`] through [`Store::apply`] (as Raft does) with the pods of one
//! replicated service on N nodes, first as the orchestrator creates them
//! (assigned), then as their nodes report them running, and prints the
//! bytes the allocator holds per pod after each step.
//!
//! `cargo run --release -p shoal-manager --example store_bytes [PODS] [NODES]`
//!
//! The `sim` benchmark's `manager_bytes_per_pod` is a whole process's
//! resident set (three managers and every agent); this is one store alone,
//! counted exactly, so a change to what a pod costs shows here first.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use shoal_manager::ids::new_id;
use shoal_manager::proposer::batch;
use shoal_manager::store::{put, put_forced, Store};
use shoal_proto::{Meta, Pod, PodState, PodStatus};

/// The system allocator, counting the bytes it holds.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn held() -> isize {
    HELD.load(Ordering::Relaxed)
}

/// Mutations per applied batch, as Raft entries carry them.
const ENTRY: usize = 500;

fn main() {
    let mut args = std::env::args().skip(1);
    let pods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    println!(
        "a Pod is {} bytes inline (its PodStatus {}), before what its strings point to",
        std::mem::size_of::<Pod>(),
        std::mem::size_of::<PodStatus>()
    );
    let store = Store::new();
    let deployment_id = new_id();
    let replica_set_id = new_id();
    let node_ids: Vec<String> = (0..nodes).map(|i| format!("sim-node-{i}")).collect();
    let now = 1_780_000_000_000;
    let mut index = 0;

    let empty = held();
    let mut created: Vec<Pod> = Vec::with_capacity(pods);
    for chunk in (0..pods).collect::<Vec<_>>().chunks(ENTRY) {
        let mutations = chunk
            .iter()
            .map(|&i| {
                let pod = Pod {
                    id: new_id(),
                    meta: Some(Meta {
                        version: 0,
                        created_at: now,
                        updated_at: now,
                    }),
                    deployment_id: deployment_id.clone(),
                    replica_set_id: replica_set_id.clone(),
                    slot: i as u64 + 1,
                    node_id: node_ids[i % nodes].clone(),
                    desired_state: PodState::Running as i32,
                    status: Some(PodStatus {
                        state: PodState::Assigned as i32,
                        message: "assigned to a node".into(),
                        timestamp: now,
                        ..Default::default()
                    }),
                    node_epoch: 1,
                    ..Default::default()
                };
                created.push(pod.clone());
                put(pod, 0)
            })
            .collect();
        index += 1;
        store.apply(index, &batch(mutations, false));
    }
    per_pod("assigned", store_bytes(empty, &created), pods, nodes);

    for (n, chunk) in created.chunks(ENTRY).enumerate() {
        let mutations = chunk
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let mut p = p.clone();
                p.status = Some(PodStatus {
                    state: PodState::Running as i32,
                    message: "started".into(),
                    timestamp: now + 1,
                    container_id: format!("sim{:012x}", n * ENTRY + k),
                    ip: format!("10.{}.{}.{}", n % 250, k % 250, (n + k) % 250),
                    ..Default::default()
                });
                put_forced(p)
            })
            .collect();
        index += 1;
        store.apply(index, &batch(mutations, false));
    }
    per_pod("running", store_bytes(empty, &created), pods, nodes);
}

/// Prints what the store holds per pod in one state.
fn per_pod(state: &str, bytes: isize, pods: usize, nodes: usize) {
    println!(
        "{pods} pods on {nodes} nodes: {state} {:.0} B/pod",
        bytes as f64 / pods as f64
    );
}

/// Bytes held now beyond `empty`, less the copies of the pods this program
/// keeps (`created`) to update them.
fn store_bytes(empty: isize, created: &Vec<Pod>) -> isize {
    let own: isize = created
        .iter()
        .map(|p| {
            let strings = [&p.id, &p.deployment_id, &p.replica_set_id, &p.node_id];
            let status = p.status.as_ref().map_or(0, |s| s.message.capacity());
            strings.iter().map(|s| s.capacity()).sum::<usize>() + status
        })
        .sum::<usize>() as isize
        + (created.capacity() * std::mem::size_of::<Pod>()) as isize;
    held() - empty - own
}
