// End-to-end check of the CI Kafka broker, run by `.ci/kafka.sh smoke` (and once by `start`) with
// the broker's jars on the classpath: `java -cp '<libs>/*' Smoke.java <bootstrap>`.
//
// In one JVM it proves the paths the tests rely on: the admin API (create and delete a topic with
// 4 partitions), a transactional producer (init, one committed and one aborted transaction,
// fencing of the old producer by a new one with the same transactional.id), a read_committed
// consumer in a group that sees only the committed records, and an offset commit. As a side
// effect the broker creates __transaction_state and __consumer_offsets here, so the first test
// that needs them does not pay for it.

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class Smoke {
    static final int PARTITIONS = 4;
    static final int COMMITTED = 40;
    static final int ABORTED = 10;

    public static void main(String[] args) throws Exception {
        String bootstrap = args.length > 0 ? args[0] : "127.0.0.1:19092";
        String suffix = UUID.randomUUID().toString().substring(0, 8);
        String topic = "weir-ci-smoke-" + suffix;
        String txId = "weir-ci-smoke-tx-" + suffix;
        long t0 = System.nanoTime();

        Properties common = new Properties();
        common.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        common.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        common.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");

        try (Admin admin = Admin.create(common)) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1)))
                    .all().get(30, TimeUnit.SECONDS);
            int seen = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS)
                    .get(topic).partitions().size();
            check(seen == PARTITIONS, "topic has " + seen + " partitions, expected " + PARTITIONS);
            try {
                produceAndConsume(common, bootstrap, topic, txId);
            } finally {
                admin.deleteTopics(List.of(topic)).all().get(30, TimeUnit.SECONDS);
            }
            // The delete returns once the controller accepted it; the broker's metadata catches
            // up a moment later, so the listing is polled for a while.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            Set<String> left = admin.listTopics().names().get(30, TimeUnit.SECONDS);
            while (left.contains(topic) && System.nanoTime() < deadline) {
                Thread.sleep(100);
                left = admin.listTopics().names().get(30, TimeUnit.SECONDS);
            }
            check(!left.contains(topic), "topic " + topic + " still listed 10 s after delete");
        }
        System.out.printf("Kafka smoke test passed in %.1f s: admin create/delete, %d-partition topic, "
                + "transactions commit/abort/fencing, read_committed group consume%n",
                (System.nanoTime() - t0) / 1e9, PARTITIONS);
    }

    static void produceAndConsume(Properties common, String bootstrap, String topic, String txId) {
        Properties p = new Properties();
        p.putAll(common);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txId);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");

        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            producer.initTransactions();
            producer.beginTransaction();
            for (int i = 0; i < COMMITTED; i++) {
                producer.send(new ProducerRecord<>(topic, i % PARTITIONS, "k" + i, "committed-" + i));
            }
            producer.commitTransaction();

            producer.beginTransaction();
            for (int i = 0; i < ABORTED; i++) {
                producer.send(new ProducerRecord<>(topic, i % PARTITIONS, "k" + i, "aborted-" + i));
            }
            producer.flush();
            producer.abortTransaction();

            // A second producer with the same transactional.id fences the first one.
            try (KafkaProducer<String, String> successor = new KafkaProducer<>(p)) {
                successor.initTransactions();
                boolean fenced = false;
                try {
                    producer.beginTransaction();
                    producer.send(new ProducerRecord<>(topic, 0, "z", "zombie")).get(30, TimeUnit.SECONDS);
                    producer.commitTransaction();
                } catch (ProducerFencedException e) {
                    fenced = true;
                } catch (Exception e) {
                    fenced = hasCause(e, ProducerFencedException.class)
                            || hasCause(e, org.apache.kafka.common.errors.InvalidProducerEpochException.class);
                }
                check(fenced, "the old transactional producer was not fenced");
            }
        }

        Properties c = new Properties();
        c.putAll(common);
        c.put(ConsumerConfig.GROUP_ID_CONFIG, "weir-ci-smoke-group-" + topic);
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (values.size() < COMMITTED && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    values.add(r.value());
                }
            }
            // Anything after the committed records (aborted or zombie) would show up by now.
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                values.add(r.value());
            }
            consumer.commitSync(Duration.ofSeconds(30));
            Map<?, ?> committed = consumer.committed(consumer.assignment(), Duration.ofSeconds(30));
            check(committed.size() == PARTITIONS, "group committed offsets for " + committed.size()
                    + " partitions, expected " + PARTITIONS);
        }
        long good = values.stream().filter(v -> v.startsWith("committed-")).count();
        check(good == COMMITTED && values.size() == COMMITTED,
                "read_committed consumer saw " + values.size() + " records (" + good
                        + " committed), expected exactly the " + COMMITTED + " committed ones");
    }

    static boolean hasCause(Throwable e, Class<? extends Throwable> type) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (type.isInstance(t)) {
                return true;
            }
        }
        return false;
    }

    static void check(boolean ok, String message) {
        if (!ok) {
            throw new IllegalStateException("Kafka smoke test failed: " + message);
        }
    }
}
