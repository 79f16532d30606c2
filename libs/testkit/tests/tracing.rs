//! A produce is one trace: the caller's span, the client's request, the
//! broker's request span, and the append on the broker's I/O thread.

#![allow(clippy::unwrap_used)]

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use runnel_client::{NewTopic, Producer, ProducerConfig, ProducerRecord};
use runnel_testkit::TestCluster;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_is_traced_from_client_to_disk() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let cluster = TestCluster::builder().start().await;
    cluster.create_topic(NewTopic::new("traced")).await;
    let producer = Producer::with_cluster(cluster.client(), ProducerConfig::default());
    async {
        producer
            .send(ProducerRecord::new("traced", "hello"))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    .instrument(tracing::info_span!("checkout"))
    .await;
    producer.close().await.unwrap();
    cluster.shutdown().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let find = |name: &str, pred: &dyn Fn(&opentelemetry_sdk::trace::SpanData) -> bool| {
        spans
            .iter()
            .find(|s| s.name == name && pred(s))
            .unwrap_or_else(|| {
                panic!(
                    "no span {name}: {:?}",
                    spans.iter().map(|s| s.name.clone()).collect::<Vec<_>>()
                )
            })
    };
    let any = |_: &opentelemetry_sdk::trace::SpanData| true;
    let root = find("checkout", &any);
    let trace = root.span_context.trace_id();
    let request = find("produce", &|s| s.span_context.trace_id() == trace);
    assert_eq!(
        request.parent_span_id,
        root.span_context.span_id(),
        "the request is under the caller's span"
    );
    let rpc = find("rpc", &|s| {
        s.span_context.trace_id() == trace
            && s.attributes.iter().any(|kv| kv.value.as_str() == "Produce")
    });
    assert!(
        rpc.parent_span_is_remote,
        "the broker's span continues the client's trace across gRPC"
    );
    assert_eq!(
        rpc.parent_span_id,
        request.span_context.span_id(),
        "under the client's request span"
    );
    let append = find("append", &|s| s.span_context.trace_id() == trace);
    assert_eq!(
        append.parent_span_id,
        rpc.span_context.span_id(),
        "the disk write is under the broker's request"
    );
}
