//! The typed DataStream API: [`StreamEnv`] creates sources, [`DataStream`] transforms records,
//! [`KeyedStream`] partitions them by key for keyed state, timers and windows, and
//! [`WindowedStream`] evaluates windows.
//!
//! Each call adds a vertex to the environment's graph; nothing runs until
//! [`StreamEnv::execute`] or [`StreamEnv::start`]. Functions are cloned into every subtask.

use crate::error::{JobError, OperatorError};
use crate::exec::{ExecSettings, JobPlan};
use crate::functions::{KeyedProcessFunction, KeyedProcessOperator};
use crate::graph::{
    Edge, KeyGroupFn, OperatorFactory, OperatorVertex, ShipKind, SourceVertex, TypedEdge, Vertex,
    VertexKind,
};
use crate::job::{JobHandle, JobOutcome, JobSettings};
use crate::key::{Data, Key, StateValue, key_group};
use crate::operator::{FilterFn, FlatMapFn, FnOperator, MapFn, Operator, OperatorInit, Output};
use crate::record::Record;
use crate::sink::{Sink, SinkOperator};
use crate::source::Source;
use crate::time::{Clock, SystemClock};
use crate::watermark::{WatermarkGenerator, WatermarkStrategy};
use crate::window::{
    AggregateFunction, ProcessWindowFunction, WindowAssigner,
    operator::{AggContents, AggProcessContents, ListContents},
};
use crate::window::{WindowContents, WindowOperator, WindowOutput};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings of a job.
#[derive(Debug, Clone)]
pub struct EnvConfig {
    /// Job name.
    pub name: String,
    /// Default parallelism of every operator.
    pub parallelism: u32,
    /// Number of key groups: the upper bound for rescaling keyed state.
    pub max_parallelism: u32,
    /// Processing-time clock (tests use a manual one).
    pub clock: Arc<dyn Clock>,
    /// Batches a channel holds before its producer blocks.
    pub channel_capacity: usize,
    /// Whether forward-connected operators of equal parallelism share a thread.
    pub chaining: bool,
    /// Checkpointing, restart strategy, restore point, fault injection.
    pub job: JobSettings,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            name: "weir-job".into(),
            parallelism: 1,
            max_parallelism: 128,
            clock: Arc::new(SystemClock),
            channel_capacity: 8,
            chaining: true,
            job: JobSettings::default(),
        }
    }
}

struct EnvInner {
    config: EnvConfig,
    vertices: Vec<Vertex>,
}

/// Builds a dataflow.
#[derive(Clone)]
pub struct StreamEnv {
    inner: Rc<RefCell<EnvInner>>,
}

impl StreamEnv {
    /// A new environment.
    pub fn new(config: EnvConfig) -> Self {
        Self {
            inner: Rc::new(RefCell::new(EnvInner {
                config,
                vertices: Vec::new(),
            })),
        }
    }

    /// The settings.
    pub fn config(&self) -> EnvConfig {
        self.inner.borrow().config.clone()
    }

    /// Default parallelism.
    pub fn parallelism(&self) -> u32 {
        self.inner.borrow().config.parallelism
    }

    fn add_vertex(&self, v: Vertex) -> usize {
        let mut g = self.inner.borrow_mut();
        g.vertices.push(v);
        g.vertices.len() - 1
    }

    fn with_vertex(&self, id: usize, f: impl FnOnce(&mut Vertex)) {
        if let Some(v) = self.inner.borrow_mut().vertices.get_mut(id) {
            f(v)
        }
    }

    /// Adds a source whose records get timestamps and watermarks from `watermarks`.
    pub fn source<T: Data, S: Source<T>>(
        &self,
        name: &str,
        source: S,
        watermarks: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        let id = self.add_vertex(Vertex {
            name: name.to_string(),
            uid: None,
            parallelism: None,
            kind: VertexKind::Source,
            inputs: Vec::new(),
            factory: Arc::new(SourceVertex {
                source: Arc::new(source),
                watermarks,
            }),
            chainable: true,
        });
        DataStream {
            env: self.clone(),
            heads: vec![id],
            ship: ShipKind::Forward,
            owner: None,
            _t: PhantomData,
        }
    }

    fn settings(&self) -> (Vec<Vertex>, ExecSettings, JobSettings) {
        let g = self.inner.borrow();
        let c = &g.config;
        (
            g.vertices.clone(),
            ExecSettings {
                name: c.name.clone(),
                parallelism: c.parallelism,
                max_parallelism: c.max_parallelism,
                clock: c.clock.clone(),
                channel_capacity: c.channel_capacity,
                chaining: c.chaining,
            },
            c.job.clone(),
        )
    }

    /// The stable ids of every operator, in graph order.
    pub fn operator_uids(&self) -> Result<Vec<String>, JobError> {
        let (v, s, _) = self.settings();
        Ok(JobPlan::new(v, s)?.uids)
    }

    /// Starts the job and returns at once.
    pub fn start(&self) -> Result<JobHandle, JobError> {
        let (v, s, job) = self.settings();
        crate::job::start(JobPlan::new(v, s)?, job)
    }

    /// A TaskManager of a cluster (see [`crate::cluster`]) for this job: binds its data port;
    /// [`crate::cluster::taskmanager::TaskManager::run`] then serves the JobManager.
    pub fn task_manager(
        &self,
        config: crate::cluster::TaskManagerConfig,
    ) -> Result<Arc<crate::cluster::taskmanager::TaskManager>, JobError> {
        let (v, s, job) = self.settings();
        crate::cluster::taskmanager::start(JobPlan::new(v, s)?, job, config)
    }

    /// Runs this job's subtasks as a TaskManager of a cluster until `stop` is set: registers
    /// with the JobManager, runs what it deploys here, and registers again when the
    /// JobManager is lost.
    pub fn run_task_manager(
        &self,
        config: crate::cluster::TaskManagerConfig,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<(), JobError> {
        self.task_manager(config)?.run(stop);
        Ok(())
    }

    /// Runs the job until it finishes (bounded sources), fails or is cancelled.
    pub fn execute(&self) -> Result<JobOutcome, JobError> {
        self.start()?.wait()
    }

    /// A human-readable description of the graph: one line per vertex.
    pub fn describe(&self) -> Vec<String> {
        let g = self.inner.borrow();
        g.vertices
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let ins: Vec<String> = v
                    .inputs
                    .iter()
                    .map(|e| format!("{}:{:?}", e.from, e.kind))
                    .collect();
                format!(
                    "{i} {:?} {} p={} <- [{}]",
                    v.kind,
                    v.name,
                    v.parallelism.unwrap_or(g.config.parallelism),
                    ins.join(", ")
                )
            })
            .collect()
    }
}

/// A stream of `T` records.
pub struct DataStream<T> {
    env: StreamEnv,
    heads: Vec<usize>,
    ship: ShipKind,
    /// The stateful vertex that `uid`/`name` refer to when this stream is the stateless tail
    /// of a composite operator (window results).
    owner: Option<usize>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        Self {
            env: self.env.clone(),
            heads: self.heads.clone(),
            ship: self.ship,
            owner: self.owner,
            _t: PhantomData,
        }
    }
}

impl<T: Data> DataStream<T> {
    fn connect<O: Data>(
        &self,
        name: &str,
        kind: VertexKind,
        make: OperatorFactory<T, O>,
        ship: ShipKind,
        key_group: Option<KeyGroupFn<T>>,
    ) -> DataStream<O> {
        let factory: Arc<TypedEdge<T>> = Arc::new(TypedEdge {
            kind: ship,
            key_group,
        });
        let inputs = self
            .heads
            .iter()
            .map(|&from| Edge {
                from,
                kind: ship,
                factory: factory.clone(),
            })
            .collect();
        let id = self.env.add_vertex(Vertex {
            name: name.to_string(),
            uid: None,
            parallelism: None,
            kind,
            inputs,
            factory: Arc::new(OperatorVertex { make }),
            chainable: true,
        });
        DataStream {
            env: self.env.clone(),
            heads: vec![id],
            ship: ShipKind::Forward,
            owner: None,
            _t: PhantomData,
        }
    }

    /// Adds a one-input operator built per subtask by `make`.
    pub fn transform<O: Data>(
        &self,
        name: &str,
        make: impl Fn() -> Box<dyn Operator<T, O>> + Send + Sync + 'static,
    ) -> DataStream<O> {
        self.connect(name, VertexKind::Operator, Arc::new(make), self.ship, None)
    }

    fn per_subtask<F: Clone + Send + 'static, O: Data>(
        &self,
        name: &str,
        f: F,
        wrap: impl Fn(F) -> Box<dyn Operator<T, O>> + Send + Sync + 'static,
    ) -> DataStream<O> {
        let proto = Mutex::new(f);
        self.transform(name, move || {
            let f = proto
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            wrap(f)
        })
    }

    /// Applies `f` to every record.
    pub fn map<O: Data, F>(&self, f: F) -> DataStream<O>
    where
        F: FnMut(T) -> O + Clone + Send + 'static,
    {
        self.per_subtask("map", f, |f| Box::new(FnOperator::new(MapFn(f))))
    }

    /// Keeps the records for which `f` is true.
    pub fn filter<F>(&self, f: F) -> DataStream<T>
    where
        F: FnMut(&T) -> bool + Clone + Send + 'static,
    {
        self.per_subtask("filter", f, |f| Box::new(FnOperator::new(FilterFn(f))))
    }

    /// Replaces every record by zero or more records.
    pub fn flat_map<O: Data, It, F>(&self, f: F) -> DataStream<O>
    where
        F: FnMut(T) -> It + Clone + Send + 'static,
        It: IntoIterator<Item = O> + 'static,
    {
        self.per_subtask("flat_map", f, |f| Box::new(FnOperator::new(FlatMapFn(f))))
    }

    /// Merges streams of the same type.
    pub fn union(&self, other: &DataStream<T>) -> DataStream<T> {
        let mut heads = self.heads.clone();
        heads.extend(
            other
                .heads
                .iter()
                .copied()
                .filter(|h| !self.heads.contains(h)),
        );
        DataStream {
            env: self.env.clone(),
            heads,
            ship: self.ship,
            owner: None,
            _t: PhantomData,
        }
    }

    /// Distributes records round robin to the next operator's subtasks.
    pub fn rebalance(&self) -> DataStream<T> {
        DataStream {
            ship: ShipKind::Rebalance,
            ..self.clone()
        }
    }

    /// Sends every record to every subtask of the next operator.
    pub fn broadcast(&self) -> DataStream<T> {
        DataStream {
            ship: ShipKind::Broadcast,
            ..self.clone()
        }
    }

    /// Partitions by key: records with equal keys go to the same subtask.
    pub fn key_by<K: Key, F>(&self, f: F) -> KeyedStream<K, T>
    where
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        KeyedStream {
            stream: self.clone(),
            key_fn: Arc::new(f),
        }
    }

    /// Re-assigns timestamps and generates watermarks here, replacing upstream watermarks.
    pub fn assign_timestamps_and_watermarks(
        &self,
        strategy: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        self.transform("timestamps/watermarks", move || {
            Box::new(TimestampsAndWatermarks {
                wmgen: WatermarkGenerator::new(strategy.clone()),
                last: i64::MIN,
            })
        })
    }

    /// Writes the stream to a sink.
    pub fn sink<S: Sink<T>>(&self, name: &str, sink: S) -> DataStream<()> {
        let sink: Arc<dyn Sink<T>> = Arc::new(sink);
        self.connect(
            name,
            VertexKind::Sink,
            Arc::new(move || Box::new(SinkOperator::new(sink.clone()))),
            self.ship,
            None,
        )
    }

    fn last(&self) -> Option<usize> {
        match self.heads.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// Names the operator that produced this stream.
    pub fn name(self, name: &str) -> Self {
        if let Some(id) = self.owner.or(self.last()) {
            self.env.with_vertex(id, |v| v.name = name.to_string());
        }
        self
    }

    /// Gives the operator that produced this stream a stable id, used to map its state on
    /// restore. Set it on every stateful operator. On a window's result stream it names the
    /// window operator.
    pub fn uid(self, uid: &str) -> Self {
        if let Some(id) = self.owner.or(self.last()) {
            self.env.with_vertex(id, |v| v.uid = Some(uid.to_string()));
        }
        self
    }

    /// Sets the parallelism of the operator that produced this stream.
    pub fn parallelism(self, parallelism: u32) -> Self {
        for id in self.owner.into_iter().chain(self.last()) {
            self.env
                .with_vertex(id, |v| v.parallelism = Some(parallelism));
        }
        self
    }

    /// Keeps the operator that produced this stream out of its predecessor's thread.
    pub fn start_new_chain(self) -> Self {
        if let Some(id) = self.last() {
            self.env.with_vertex(id, |v| v.chainable = false);
        }
        self
    }
}

struct TimestampsAndWatermarks<T> {
    wmgen: WatermarkGenerator<T>,
    last: i64,
}

impl<T: Data> Operator<T, T> for TimestampsAndWatermarks<T> {
    fn process(
        &mut self,
        mut rec: Record<T>,
        out: &mut dyn Output<T>,
    ) -> Result<(), OperatorError> {
        self.wmgen.on_record(&mut rec);
        out.emit(rec)?;
        if self.wmgen.per_record()
            && let Some(wm) = self.wmgen.poll()
        {
            out.emit_watermark(wm)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: i64, out: &mut dyn Output<T>) -> Result<(), OperatorError> {
        // Upstream watermarks are replaced, except the end-of-input one.
        if wm == i64::MAX {
            out.emit_watermark(wm)
        } else {
            Ok(())
        }
    }

    fn on_processing_time(
        &mut self,
        now: i64,
        out: &mut dyn Output<T>,
    ) -> Result<(), OperatorError> {
        if now - self.last >= self.wmgen.interval().as_millis() as i64 {
            self.last = now;
            if let Some(wm) = self.wmgen.poll() {
                out.emit_watermark(wm)?;
            }
        }
        Ok(())
    }

    fn open(&mut self, _init: &OperatorInit) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// A stream partitioned by key.
pub struct KeyedStream<K, T> {
    stream: DataStream<T>,
    key_fn: Arc<dyn Fn(&T) -> K + Send + Sync>,
}

impl<K, T> Clone for KeyedStream<K, T> {
    fn clone(&self) -> Self {
        Self {
            stream: self.stream.clone(),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<K: Key, T: Data> KeyedStream<K, T> {
    fn keyed<O: Data>(&self, name: &str, make: OperatorFactory<T, O>) -> DataStream<O> {
        let maxp = self.stream.env.inner.borrow().config.max_parallelism;
        let kf = self.key_fn.clone();
        let kg: KeyGroupFn<T> = Arc::new(move |v: &T| key_group(&kf(v), maxp));
        self.stream
            .connect(name, VertexKind::Operator, make, ShipKind::Hash, Some(kg))
    }

    /// Runs a keyed process function (keyed state and timers).
    pub fn process<O: Data, F: KeyedProcessFunction<K, T, O>>(&self, f: F) -> DataStream<O> {
        let proto = Mutex::new(f);
        let kf = self.key_fn.clone();
        self.keyed(
            "process",
            Arc::new(move || {
                let f = proto
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                Box::new(KeyedProcessOperator::new(f, kf.clone()))
            }),
        )
    }

    /// Groups records of each key into event-time windows.
    pub fn window(&self, assigner: WindowAssigner) -> WindowedStream<K, T> {
        WindowedStream {
            keyed: self.clone(),
            assigner,
            lateness: Duration::ZERO,
            processing_time: false,
        }
    }

    /// Groups records of each key into processing-time windows: a record belongs to the
    /// windows of the moment it arrives, and windows fire when the clock passes their end.
    pub fn window_processing_time(&self, assigner: WindowAssigner) -> WindowedStream<K, T> {
        WindowedStream {
            processing_time: true,
            ..self.window(assigner)
        }
    }
}

/// A keyed stream grouped into windows.
pub struct WindowedStream<K, T> {
    keyed: KeyedStream<K, T>,
    assigner: WindowAssigner,
    lateness: Duration,
    processing_time: bool,
}

/// A windowed stream whose too-late records are kept as a second output.
pub struct LateDataWindowedStream<K, T> {
    inner: WindowedStream<K, T>,
}

fn results<O: Data, T: Data>(s: &DataStream<WindowOutput<O, T>>) -> DataStream<O> {
    let mut r = s
        .flat_map(|o: WindowOutput<O, T>| match o {
            WindowOutput::Result(r) => Some(r),
            WindowOutput::Late(_) => None,
        })
        .name("window-results");
    // `.uid()`/`.name()` on the results mean the (stateful) window operator.
    r.owner = s.heads.first().copied();
    r
}

fn late<O: Data, T: Data>(s: &DataStream<WindowOutput<O, T>>) -> DataStream<T> {
    s.flat_map(|o: WindowOutput<O, T>| match o {
        WindowOutput::Late(t) => Some(t),
        WindowOutput::Result(_) => None,
    })
    .name("late-data")
}

impl<K: Key, T: Data> WindowedStream<K, T> {
    /// Keeps windows this long after the watermark passed their end; late records in that time
    /// update and re-fire the window.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = lateness;
        self
    }

    /// Keeps records that are too late for every window as a second output stream.
    pub fn side_output_late_data(self) -> LateDataWindowedStream<K, T> {
        LateDataWindowedStream { inner: self }
    }

    fn build<C: WindowContents<K, T>>(
        &self,
        contents: C,
        emit_late: bool,
    ) -> DataStream<WindowOutput<C::Out, T>> {
        let proto = Mutex::new(contents);
        let kf = self.keyed.key_fn.clone();
        let assigner = self.assigner;
        let processing_time = self.processing_time;
        let lateness = self.lateness.as_millis() as i64;
        let name = match assigner {
            WindowAssigner::Tumbling { .. } => "tumbling-window",
            WindowAssigner::Sliding { .. } => "sliding-window",
            WindowAssigner::Session { .. } => "session-window",
        };
        self.keyed.keyed(
            name,
            Arc::new(move || {
                let c = proto
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let op = WindowOperator::new(kf.clone(), assigner, lateness, emit_late, c);
                Box::new(if processing_time {
                    op.on_processing_time_clock()
                } else {
                    op
                })
            }),
        )
    }

    /// Aggregates each window incrementally.
    pub fn aggregate<A, ACC, R>(&self, agg: A) -> DataStream<R>
    where
        A: AggregateFunction<T, ACC, R>,
        ACC: StateValue,
        R: Data,
    {
        results(&self.build(
            AggContents {
                agg,
                _p: PhantomData,
            },
            false,
        ))
    }

    /// Aggregates incrementally, then passes the result with its key and window to `f`.
    pub fn aggregate_with<A, ACC, R, P, O>(&self, agg: A, f: P) -> DataStream<O>
    where
        A: AggregateFunction<T, ACC, R>,
        P: ProcessWindowFunction<K, R, O>,
        ACC: StateValue,
        R: Data,
        O: Data,
    {
        results(&self.build(
            AggProcessContents {
                agg,
                f,
                _p: PhantomData,
            },
            false,
        ))
    }

    /// Buffers every record of a window and hands them all to `f`.
    pub fn process<P, O>(&self, f: P) -> DataStream<O>
    where
        T: StateValue,
        P: ProcessWindowFunction<K, T, O>,
        O: Data,
    {
        results(&self.build(ListContents { f, _p: PhantomData }, false))
    }
}

impl<K: Key, T: Data> LateDataWindowedStream<K, T> {
    /// As [`WindowedStream::aggregate`], plus the late records.
    pub fn aggregate<A, ACC, R>(&self, agg: A) -> (DataStream<R>, DataStream<T>)
    where
        A: AggregateFunction<T, ACC, R>,
        ACC: StateValue,
        R: Data,
    {
        let s = self.inner.build(
            AggContents {
                agg,
                _p: PhantomData,
            },
            true,
        );
        (results(&s), late(&s))
    }

    /// As [`WindowedStream::aggregate_with`], plus the late records.
    pub fn aggregate_with<A, ACC, R, P, O>(&self, agg: A, f: P) -> (DataStream<O>, DataStream<T>)
    where
        A: AggregateFunction<T, ACC, R>,
        P: ProcessWindowFunction<K, R, O>,
        ACC: StateValue,
        R: Data,
        O: Data,
    {
        let s = self.inner.build(
            AggProcessContents {
                agg,
                f,
                _p: PhantomData,
            },
            true,
        );
        (results(&s), late(&s))
    }

    /// As [`WindowedStream::process`], plus the late records.
    pub fn process<P, O>(&self, f: P) -> (DataStream<O>, DataStream<T>)
    where
        T: StateValue,
        P: ProcessWindowFunction<K, T, O>,
        O: Data,
    {
        let s = self.inner.build(ListContents { f, _p: PhantomData }, true);
        (results(&s), late(&s))
    }
}
