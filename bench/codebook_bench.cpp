// Codebook training time against a bare FAISS spherical k-means of the same
// vectors and iterations, measured in the same run (target: at most 1.3x).
//
// Usage: codebook_bench [--vectors N] [--dim D] [--codewords K] [--iterations I]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/blas_kernels.h"
#include "core/memory_policy.h"
#include "core/threads.h"
#include "train/codebook_trainer.h"

int main(int argc, char** argv) {
  spindlekv::fix_blas_kernels(argc, argv);  // SPINDLEKV_NO_BLAS_FIX=1 turns it off
  spindlekv::keep_freed_memory_mapped();    // as the CLI does (core/memory_policy.h)
  int64_t n = 50000, dim = 128, K = 1024, iterations = 10, clusters = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (a == "--vectors")
      n = v;
    else if (a == "--dim")
      dim = v;
    else if (a == "--codewords")
      K = v;
    else if (a == "--iterations")
      iterations = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const int threads = spindlekv::configure_threads(0);
  std::printf("machine          %s\n", spindlekv::compute_environment().c_str());
  // Vectors around `clusters` directions, like keys of a shallow layer.
  at::Generator gen = at::detail::createCPUGenerator(1);
  at::Tensor centres = spindlekv::unit_directions(at::normal(0.0, 1.0, {clusters, dim}, gen));
  at::Tensor pick = at::randint(0, clusters, {n}, gen);
  at::Tensor x = spindlekv::unit_directions(centres.index_select(0, pick) +
                                            at::normal(0.0, 0.01, {n, dim}, gen));

  auto t0 = std::chrono::steady_clock::now();
  faiss::ClusteringParameters cp;
  cp.niter = static_cast<int>(iterations);
  cp.spherical = true;
  cp.min_points_per_centroid = 1;
  cp.max_points_per_centroid = 1 << 20;
  faiss::Clustering clus(static_cast<int>(dim), static_cast<size_t>(K), cp);
  faiss::IndexFlatIP index(dim);
  clus.train(n, x.data_ptr<float>(), index);
  const double kmeans_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  spindlekv::CodebookTrainingParameters p;
  p.max_codewords = K;
  p.kmeans_iterations = iterations;
  t0 = std::chrono::steady_clock::now();
  spindlekv::Codebook cb = spindlekv::train_codebook(x, p);
  const double train_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::printf("threads          %d\n", threads);
  std::printf("vectors          %lld x %lld, %lld codewords, %lld k-means iterations\n",
              (long long)n, (long long)dim, (long long)K, (long long)iterations);
  std::printf("faiss k-means    %.2f s\n", kmeans_s);
  std::printf("train_codebook   %.2f s (coverage %.4f with %lld codewords, %lld rounds)\n", train_s,
              cb.coverage, (long long)cb.codewords.size(0), (long long)cb.rounds);
  std::printf("ratio            %.2f x k-means (target <= 1.30)\n", train_s / kmeans_s);
  return 0;
}
