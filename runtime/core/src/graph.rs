//! The logical dataflow graph the DataStream API builds: vertices (sources, operators, sinks)
//! and the edges between them, with the type-erased factories the executor uses to create
//! channels, operator chains and task loops for any record type.
//!
//! Types are known where the API is called, so each vertex and edge carries a small typed
//! factory behind a trait object; the executor wires them together through `Box<dyn Any>`
//! values that each factory downcasts back to the one type it produced. The downcasts happen
//! once at deployment, never per record.

use crate::channel::{Notify, Receiver, channel};
use crate::error::OperatorError;
use crate::exec::{InputHead, SourceHead, TaskHead};
use crate::key::{Data, subtask_for_key_group};
use crate::operator::{
    ChainOutput, Discard, ExchangeOutput, Operator, OperatorInit, Output, Partitioner, Tee,
};
use crate::source::Source;
use crate::watermark::WatermarkStrategy;
use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A type-erased value passed between factories at deployment.
pub(crate) type AnyBox = Box<dyn Any + Send>;

/// How records travel along an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipKind {
    /// Subtask i to subtask i when parallelisms match (chainable), else round robin.
    Forward,
    /// Round robin over all consumer subtasks.
    Rebalance,
    /// By key group.
    Hash,
    /// To every consumer subtask.
    Broadcast,
}

/// What a vertex is, for metrics and validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VertexKind {
    /// Produces records.
    Source,
    /// Transforms records.
    Operator,
    /// Consumes records.
    Sink,
}

pub(crate) type KeyGroupFn<T> = Arc<dyn Fn(&T) -> u32 + Send + Sync>;

/// Creates the channels of one edge for its record type.
pub(crate) trait EdgeFactory: Send + Sync {
    /// Returns, per producer subtask, its output (`Box<dyn Output<T>>`), and per consumer
    /// subtask, its receivers (`Vec<Receiver<T>>`). With a placement, only the ends in this
    /// process are real; channels to or from other processes go over the network.
    fn connect(&self, wiring: &EdgeWiring<'_>)
    -> Result<(Vec<AnyBox>, Vec<AnyBox>), OperatorError>;
}

/// Where the subtasks of an attempt run, when they are spread over TaskManagers.
pub(crate) struct NetWiring<'a> {
    pub placement: &'a crate::exec::Placement,
    pub attempt: u64,
    /// Consumer vertex and input index (`vertex << 16 | input`).
    pub edge: u64,
}

pub(crate) struct EdgeWiring<'a> {
    pub producers: u32,
    pub consumers: u32,
    pub pointwise: bool,
    pub max_parallelism: u32,
    pub notifies: &'a [Arc<Notify>],
    pub cancel: &'a Arc<AtomicBool>,
    pub capacity: usize,
    pub net: Option<NetWiring<'a>>,
}

pub(crate) struct TypedEdge<T> {
    pub kind: ShipKind,
    pub key_group: Option<KeyGroupFn<T>>,
}

impl<T: Data> EdgeFactory for TypedEdge<T> {
    fn connect(&self, w: &EdgeWiring<'_>) -> Result<(Vec<AnyBox>, Vec<AnyBox>), OperatorError> {
        let mut receivers: Vec<Vec<Receiver<T>>> = (0..w.consumers).map(|_| Vec::new()).collect();
        let mut outputs: Vec<AnyBox> = Vec::with_capacity(w.producers as usize);
        let here = |sub: u32| w.net.as_ref().is_none_or(|n| n.placement.is_local(sub));
        for p in 0..w.producers {
            let targets: Vec<u32> = if w.pointwise {
                vec![p]
            } else {
                (0..w.consumers).collect()
            };
            let mut senders = Vec::with_capacity(targets.len());
            for &c in &targets {
                match (&w.net, here(p), here(c)) {
                    (_, true, true) | (None, _, _) => {
                        let (tx, rx) = channel::<T>(
                            w.capacity,
                            w.notifies[c as usize].clone(),
                            w.cancel.clone(),
                        );
                        senders.push(tx);
                        receivers[c as usize].push(rx);
                    }
                    (Some(n), true, false) => {
                        let key = n.key(p, c);
                        let address = n.placement.address_of(c);
                        let tx =
                            crate::cluster::exchange::outbound::<T>(address, key, w.cancel.clone())
                                .map_err(|e| {
                                    OperatorError::User(format!(
                                        "connecting subtask {p} to subtask {c} at {address}: {e}"
                                    ))
                                })?;
                        senders.push(tx);
                    }
                    (Some(n), false, true) => {
                        let rx = crate::cluster::exchange::inbound::<T>(
                            &n.placement.server,
                            n.key(p, c),
                            w.capacity,
                            w.notifies[c as usize].clone(),
                            w.cancel.clone(),
                            n.placement.broken.clone(),
                        );
                        receivers[c as usize].push(rx);
                    }
                    (Some(_), false, false) => {}
                }
            }
            if !here(p) {
                outputs.push(discard_of::<T>());
                continue;
            }
            let partitioner = if w.pointwise {
                Partitioner::Forward
            } else {
                match (self.kind, &self.key_group) {
                    (ShipKind::Hash, Some(kg)) => {
                        let kg = kg.clone();
                        let (maxp, n) = (w.max_parallelism, w.consumers);
                        Partitioner::Hash(Arc::new(move |v: &T| {
                            subtask_for_key_group(kg(v), maxp, n) as usize
                        }))
                    }
                    (ShipKind::Broadcast, _) => Partitioner::Broadcast,
                    _ => Partitioner::Rebalance(p as usize % senders.len().max(1)),
                }
            };
            let out: Box<dyn Output<T>> = Box::new(ExchangeOutput::new(senders, partitioner));
            outputs.push(Box::new(out));
        }
        Ok((
            outputs,
            receivers
                .into_iter()
                .map(|r| Box::new(r) as AnyBox)
                .collect(),
        ))
    }
}

impl NetWiring<'_> {
    fn key(&self, producer: u32, consumer: u32) -> crate::cluster::exchange::ChannelKey {
        crate::cluster::exchange::ChannelKey {
            attempt: self.attempt,
            edge: self.edge,
            producer,
            consumer,
        }
    }
}

/// Everything a task head needs besides its inputs and chain.
pub(crate) struct HeadInit {
    pub init: OperatorInit,
    pub notify: Arc<Notify>,
    /// In-flight records to replay first (restored unaligned checkpoint).
    pub channel_state: Option<Vec<u8>>,
}

/// Creates the runtime pieces of one vertex for its types.
pub(crate) trait VertexFactory: Send + Sync {
    /// Puts this operator in front of `next` (a `Box<dyn Output<Out>>`), returning a
    /// `Box<dyn Output<In>>`.
    fn chain_into(&self, init: &OperatorInit, next: AnyBox) -> Result<AnyBox, OperatorError>;
    /// Combines several `Box<dyn Output<Out>>` into one.
    fn tee(&self, outs: Vec<AnyBox>) -> Result<AnyBox, OperatorError>;
    /// A `Box<dyn Output<Out>>` that drops everything.
    fn discard(&self) -> AnyBox;
    /// The task loop for a chain headed by this vertex.
    fn head(
        &self,
        h: HeadInit,
        inputs: Vec<AnyBox>,
        next: AnyBox,
    ) -> Result<Box<dyn TaskHead>, OperatorError>;
    /// A source that can be restored at another parallelism
    /// ([`crate::Source::redistributes_positions`]).
    fn redistributes_positions(&self) -> bool {
        false
    }
}

pub(crate) fn downcast<T: 'static>(b: AnyBox, what: &str) -> Result<T, OperatorError> {
    b.downcast::<T>()
        .map(|b| *b)
        .map_err(|_| OperatorError::User(format!("internal error: type mismatch wiring {what}")))
}

fn tee_of<T: Data>(outs: Vec<AnyBox>) -> Result<AnyBox, OperatorError> {
    let outs = outs
        .into_iter()
        .map(|o| downcast::<Box<dyn Output<T>>>(o, "tee"))
        .collect::<Result<Vec<_>, _>>()?;
    let tee: Box<dyn Output<T>> = Box::new(Tee { outs });
    Ok(Box::new(tee))
}

fn discard_of<T: Data>() -> AnyBox {
    let d: Box<dyn Output<T>> = Box::new(Discard);
    Box::new(d)
}

pub(crate) type OperatorFactory<I, O> = Arc<dyn Fn() -> Box<dyn Operator<I, O>> + Send + Sync>;

pub(crate) struct OperatorVertex<I, O> {
    pub make: OperatorFactory<I, O>,
}

impl<I: Data, O: Data> VertexFactory for OperatorVertex<I, O> {
    fn chain_into(&self, init: &OperatorInit, next: AnyBox) -> Result<AnyBox, OperatorError> {
        let next = downcast::<Box<dyn Output<O>>>(next, "operator chain")?;
        let link: Box<dyn Output<I>> = Box::new(ChainOutput::new((self.make)(), next, init)?);
        Ok(Box::new(link))
    }

    fn tee(&self, outs: Vec<AnyBox>) -> Result<AnyBox, OperatorError> {
        tee_of::<O>(outs)
    }

    fn discard(&self) -> AnyBox {
        discard_of::<O>()
    }

    fn head(
        &self,
        h: HeadInit,
        inputs: Vec<AnyBox>,
        next: AnyBox,
    ) -> Result<Box<dyn TaskHead>, OperatorError> {
        let mut channels = Vec::new();
        for i in inputs {
            channels.extend(downcast::<Vec<Receiver<I>>>(i, "input gate")?);
        }
        let chain = downcast::<Box<dyn Output<I>>>(self.chain_into(&h.init, next)?, "head")?;
        Ok(Box::new(InputHead::new(channels, h, chain)))
    }
}

pub(crate) struct SourceVertex<T> {
    pub source: Arc<dyn Source<T>>,
    pub watermarks: WatermarkStrategy<T>,
}

impl<T: Data> VertexFactory for SourceVertex<T> {
    fn chain_into(&self, _init: &OperatorInit, _next: AnyBox) -> Result<AnyBox, OperatorError> {
        Err(OperatorError::User(
            "internal error: a source cannot be chained after another vertex".into(),
        ))
    }

    fn tee(&self, outs: Vec<AnyBox>) -> Result<AnyBox, OperatorError> {
        tee_of::<T>(outs)
    }

    fn discard(&self) -> AnyBox {
        discard_of::<T>()
    }

    fn head(
        &self,
        h: HeadInit,
        _inputs: Vec<AnyBox>,
        next: AnyBox,
    ) -> Result<Box<dyn TaskHead>, OperatorError> {
        let out = downcast::<Box<dyn Output<T>>>(next, "source output")?;
        Ok(Box::new(SourceHead::new(
            self.source.clone(),
            self.watermarks.clone(),
            h,
            out,
        )))
    }

    fn redistributes_positions(&self) -> bool {
        self.source.redistributes_positions()
    }
}

/// An input of a vertex.
#[derive(Clone)]
pub(crate) struct Edge {
    pub from: usize,
    pub kind: ShipKind,
    pub factory: Arc<dyn EdgeFactory>,
}

/// A node of the dataflow.
#[derive(Clone)]
pub(crate) struct Vertex {
    pub name: String,
    pub uid: Option<String>,
    pub parallelism: Option<u32>,
    pub kind: VertexKind,
    pub inputs: Vec<Edge>,
    pub factory: Arc<dyn VertexFactory>,
    pub chainable: bool,
}
