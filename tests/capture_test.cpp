#include "capture/capture_runner.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "capture/capture_file.h"
#include "capture/text_source.h"
#include "core/atomic_file.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "test_util.h"

namespace spindlekv {
namespace {
namespace fs = std::filesystem;

// A tiny byte-level model directory (random weights, BOS 256, EOS 257).
struct ByteModelFixture {
  testutil::TempDir dir;
  std::string model;
  std::string text;
  LlamaModel* loaded = nullptr;

  ByteModelFixture() {
    ModelConfig c = testutil::tiny_config(4, 2, 8);
    c.vocab_size = 258;
    c.max_position_embeddings = 64;
    c.bos_token_id = 256;
    c.eos_token_id = 257;
    model = dir.file("model");
    LlamaModel::random(c, 21, 0.2).save(model, at::kFloat);
    write_file_atomically(
        model + "/tokenizer.json",
        R"({"spindlekv_tokenizer": "byte", "bos_token_id": 256, "eos_token_id": 257})");
    text = dir.file("calib.txt");
    std::string body;
    for (int i = 0; i < 40; ++i)
      body += "In the beginning " + std::to_string(i) + " was the word. ";
    write_file_atomically(text, body);
  }

  CaptureOptions options(const std::string& out_name) const {
    CaptureOptions o;
    o.model_dir = model;
    o.text_paths = {text};
    o.out = dir.file(out_name);
    o.seq_len = 32;
    o.window = 8;
    o.max_sequences = 5;
    return o;
  }
};

TEST(Capture, Layer0PreRopeKeysAndValuesMatchEmbeddingNormAndProjection) {
  ByteModelFixture fx;
  CaptureOptions o = fx.options("cap.h5");
  o.layers = "0";
  CaptureSummary s = run_capture(o);
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(s.sequences, 5);
  CaptureReader r(o.out);
  EXPECT_TRUE(r.finished());
  const int64_t n = r.vector_count(0);
  ASSERT_EQ(n, 5 * 32);
  at::Tensor keys = r.read_keys(0, 0, n), values = r.read_values(0, 0, n);
  at::Tensor tokens = r.read_index(0, "token_ids");
  LlamaModel m = LlamaModel::load(fx.model);
  const LayerWeights& L = m.weights().layers[0];
  at::Tensor h = rms_norm(m.weights().embed_tokens.index_select(0, tokens), L.input_norm,
                          m.config().rms_norm_eps);
  at::Tensor k = at::linear(h, L.k_proj).view({n, 2, 8});
  at::Tensor v = at::linear(h, L.v_proj).view({n, 2, 8});
  EXPECT_TRUE(at::allclose(keys, k, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(values, v, 1e-5, 1e-6));
  // Same token id, same layer-0 key, wherever it occurs.
  at::Tensor pos = r.read_index(0, "positions");
  EXPECT_EQ(pos[0].item<int64_t>(), 0);
  EXPECT_EQ(tokens[0].item<int64_t>(), 256);  // BOS opens every sequence
  EXPECT_EQ(tokens[32].item<int64_t>(), 256);
}

TEST(Capture, MetadataAndStatisticsAreRecorded) {
  ByteModelFixture fx;
  CaptureOptions o = fx.options("cap.h5");
  run_capture(o);
  CaptureReader r(o.out);
  const CaptureMetadata& m = r.metadata();
  EXPECT_EQ(m.layers, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(m.num_kv_heads, 2);
  EXPECT_EQ(m.tokenizer, "byte");
  EXPECT_EQ(m.seq_len, 32);
  EXPECT_EQ(std::count(m.model_fingerprint.begin(), m.model_fingerprint.end(), ':'), 2);
  EXPECT_EQ(m.calibration_hash.size(), 32u);
  at::Tensor retained = r.read_statistic(1, "retained_mass");
  ASSERT_EQ(retained.sizes(),
            (std::vector<int64_t>{5, 4, static_cast<int64_t>(m.keep_fractions.size())}));
  // Keeping the whole context retains all the mass; keeping less never more.
  EXPECT_TRUE(at::allclose(retained.select(2, -1), at::ones({5, 4}, at::kDouble), 1e-6, 1e-9));
  EXPECT_TRUE((retained.diff(1, 2) >= -1e-9).all().item<bool>());
  at::Tensor kp = r.read_statistic(0, "key_pair_fraction");
  EXPECT_EQ(kp.sizes(), (std::vector<int64_t>{5, 2}));
  EXPECT_TRUE(((kp >= 0) & (kp <= 1)).all().item<bool>());
}

TEST(Capture, PositionSamplingCapsVectorsPerSequence) {
  ByteModelFixture fx;
  CaptureOptions o = fx.options("cap.h5");
  o.positions_per_sequence = 10;
  run_capture(o);
  CaptureReader r(o.out);
  EXPECT_EQ(r.vector_count(1), 50);
  at::Tensor pos = r.read_index(1, "positions").view({5, 10});
  EXPECT_TRUE((pos.diff(1, 1) > 0).all().item<bool>());  // sorted, distinct
  EXPECT_TRUE((pos < 32).all().item<bool>());
}

TEST(Capture, InterruptedRunLeavesNoOutputAndResumeEqualsUninterruptedRun) {
  ByteModelFixture fx;
  CaptureOptions full = fx.options("full.h5");
  full.positions_per_sequence = 12;
  run_capture(full);

  CaptureOptions o = fx.options("cap.h5");
  o.positions_per_sequence = 12;
  std::atomic<bool> stop{false};
  o.stop_requested = &stop;
  CaptureSummary first = run_capture(o, [&](const CaptureProgress& p) {
    if (p.sequences == 2) stop = true;
  });
  EXPECT_FALSE(first.finished);
  EXPECT_FALSE(fs::exists(o.out));
  ASSERT_TRUE(fs::exists(o.out + ".partial"));
  {
    CaptureReader partial(o.out + ".partial");
    EXPECT_FALSE(partial.finished());
    EXPECT_EQ(partial.complete_sequences(), 2);
  }
  EXPECT_SKV_ERROR(run_capture(fx.options("cap.h5")), "use --resume");

  o.stop_requested = nullptr;
  o.resume = true;
  CaptureSummary second = run_capture(o);
  EXPECT_TRUE(second.finished);
  EXPECT_EQ(second.resumed_sequences, 2);
  EXPECT_FALSE(fs::exists(o.out + ".partial"));
  CaptureReader a(full.out), b(o.out);
  ASSERT_EQ(a.vector_count(1), b.vector_count(1));
  EXPECT_TRUE(
      at::equal(a.read_keys(1, 0, a.vector_count(1)), b.read_keys(1, 0, b.vector_count(1))));
  EXPECT_TRUE(at::equal(a.read_index(1, "positions"), b.read_index(1, "positions")));
  EXPECT_TRUE(at::equal(a.read_statistic(1, "entropy_bits"), b.read_statistic(1, "entropy_bits")));
}

TEST(Capture, WholeTextIsCapturedOnceWhenNoLimitIsGiven) {
  ByteModelFixture fx;
  write_file_atomically(fx.dir.file("exact.txt"), std::string(31 * 7 + 5, 'x'));
  CaptureOptions o = fx.options("cap.h5");
  o.text_paths = {fx.dir.file("exact.txt")};
  o.max_sequences = 0;
  // BOS + 31 bytes per sequence; the EOS after the document and the 5 spare
  // bytes do not fill an eighth sequence.
  CaptureSummary s = run_capture(o);
  EXPECT_EQ(s.sequences, 7);
  EXPECT_EQ(CaptureReader(o.out).vector_count(0), 7 * 32);
}

TEST(Capture, ExistingOutputIsNotOverwrittenWithoutFlag) {
  ByteModelFixture fx;
  CaptureOptions o = fx.options("cap.h5");
  run_capture(o);
  EXPECT_SKV_ERROR(run_capture(o), "exists (use --overwrite");
  o.overwrite = true;
  o.max_sequences = 2;
  EXPECT_EQ(run_capture(o).sequences, 2);
}

TEST(Capture, EmptyTextIsRefusedAndLeavesNoFile) {
  ByteModelFixture fx;
  write_file_atomically(fx.dir.file("empty.txt"), "");
  CaptureOptions o = fx.options("cap.h5");
  o.text_paths = {fx.dir.file("empty.txt")};
  EXPECT_SKV_ERROR(run_capture(o), "yields no complete sequence");
  EXPECT_FALSE(fs::exists(o.out));
  EXPECT_FALSE(fs::exists(o.out + ".partial"));
}

TEST(Capture, InvalidUtf8NamesFileAndOffset) {
  ByteModelFixture fx;
  write_file_atomically(fx.dir.file("bad.txt"), std::string(100, 'a') + "\xff" + "tail");
  CaptureOptions o = fx.options("cap.h5");
  o.text_paths = {fx.dir.file("bad.txt")};
  EXPECT_SKV_ERROR(run_capture(o), "bad.txt: invalid UTF-8 at byte 100");
  EXPECT_FALSE(fs::exists(o.out + ".partial"));
}

TEST(Capture, SequenceLongerThanModelIsRefused) {
  ByteModelFixture fx;
  CaptureOptions o = fx.options("cap.h5");
  o.seq_len = 65;
  EXPECT_SKV_ERROR(run_capture(o), "--seq-len exceeds the model's max_position_embeddings");
}

TEST(Capture, LayersOutOfRangeAreRefused) {
  ByteModelFixture fx;
  CaptureOptions o = fx.options("cap.h5");
  o.layers = "0-5";
  EXPECT_SKV_ERROR(run_capture(o), "'0-5' is outside the model's layers 0-1");
}

TEST(Capture, ModelDirectoryThatDoesNotLoadIsNamed) {
  ByteModelFixture fx;
  CaptureOptions o = fx.options("cap.h5");
  o.model_dir = fx.dir.file("nope");
  EXPECT_SKV_ERROR(run_capture(o), "nope");
}

TEST(Capture, ResumeWithOtherSettingsIsRefused) {
  ByteModelFixture fx;
  CaptureOptions o = fx.options("cap.h5");
  std::atomic<bool> stop{false};
  o.stop_requested = &stop;
  run_capture(o, [&](const CaptureProgress&) { stop = true; });  // one sequence, then stop
  o.stop_requested = nullptr;
  o.resume = true;
  o.seq_len = 16;
  EXPECT_SKV_ERROR(run_capture(o), "'seq_len' differs");
}

TEST(Capture, H5pyReadsTheFileWithoutThisProject) {
  if (!fs::exists("/usr/bin/python3") ||
      std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3-h5py is not installed (scripts/setup.sh installs it)";
  }
  ByteModelFixture fx;
  CaptureOptions o = fx.options("cap.h5");
  run_capture(o);
  const std::string script = fx.dir.file("check.py");
  write_file_atomically(script,
                        "import h5py, sys\n"
                        "f = h5py.File(sys.argv[1], 'r')\n"
                        "assert f.attrs['format'] == 'spindlekv-capture', f.attrs['format']\n"
                        "assert f['layers/1/keys'].shape == (160, 2, 8), f['layers/1/keys'].shape\n"
                        "assert f['layers/1/positions'][:3].tolist() == [0, 1, 2]\n"
                        "assert f['layers/0/stats/sink_mass'].shape == (5, 4)\n");
  EXPECT_EQ(std::system(("/usr/bin/python3 " + script + " " + o.out).c_str()), 0);
}

TEST(LayerSpec, ParsesRangesListsAndAll) {
  EXPECT_EQ(parse_layer_spec("all", 3), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(parse_layer_spec("0-2,5", 8), (std::vector<int64_t>{0, 1, 2, 5}));
  EXPECT_EQ(parse_layer_spec("4,1,4", 8), (std::vector<int64_t>{1, 4}));
  EXPECT_SKV_ERROR(parse_layer_spec("x", 8), "'x' is not a layer");
  EXPECT_SKV_ERROR(parse_layer_spec("3-1", 8), "outside");
}

TEST(TextSource, ReadsJsonlDirectoriesAndNamesBadLines) {
  testutil::TempDir dir;
  fs::create_directories(dir.file("d"));
  write_file_atomically(dir.file("d/a.txt"), "alpha");
  write_file_atomically(dir.file("d/b.jsonl"), "{\"text\": \"beta\"}\n\n{\"text\": \"gamma\"}\n");
  write_file_atomically(dir.file("d/skip.bin"), "ignored");
  TextSource src({dir.file("d")});
  ASSERT_EQ(src.files().size(), 2u);
  TextDocument doc;
  std::vector<std::string> texts;
  while (src.next(&doc)) texts.push_back(doc.text);
  EXPECT_EQ(texts, (std::vector<std::string>{"alpha", "beta", "gamma"}));

  write_file_atomically(dir.file("bad.jsonl"), "{\"text\": \"ok\"}\n{\"body\": 1}\n");
  TextSource bad({dir.file("bad.jsonl")});
  ASSERT_TRUE(bad.next(&doc));
  EXPECT_SKV_ERROR(bad.next(&doc), "bad.jsonl:2: missing string field 'text'");
  EXPECT_SKV_ERROR(TextSource({dir.file("missing.txt")}), "missing.txt' does not exist");
}

TEST(TokenSequencer, CutsFixedLengthSequencesWithBosAndEosSeparators) {
  auto tok = make_byte_tokenizer(256, 257);
  TokenSequencer seq(*tok, 4);
  seq.add_document("abcd");
  seq.add_document("ef");
  std::vector<int64_t> out;
  ASSERT_TRUE(seq.next_sequence(&out));
  EXPECT_EQ(out, (std::vector<int64_t>{256, 'a', 'b', 'c'}));
  ASSERT_TRUE(seq.next_sequence(&out));
  EXPECT_EQ(out, (std::vector<int64_t>{256, 'd', 257, 'e'}));
  EXPECT_FALSE(seq.next_sequence(&out));
}

}  // namespace
}  // namespace spindlekv
