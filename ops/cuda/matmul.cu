// The CUDA op table's matmul, as ops/cpu/matmul_ops.cc: cuBLAS SGEMM on the GPU's stream, each
// operand read in place in either layout (ops/common.h's matrix_layout). A shared 2-D b and a
// contiguous batch of row-major a make one tall GEMM; other evenly spaced batches one
// strided-batched call, any other batch one GEMM per entry. Full f32
// arithmetic (CUBLAS_DEFAULT_MATH: no TF32), so results stay within f32 rounding of the CPU's;
// under "precision": "bf16" both operands are rounded to bf16 and multiplied by cublasGemmEx
// with f32 accumulation, as the CPU's GEMM does. A bf16 weight is widened to f32 first (exact).
// (cuBLAS picks its kernels through cuBLASLt's heuristics; the experts' grouped GEMM comes later.)
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <dlfcn.h>

#include <array>
#include <climits>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "ops/common.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/precision.h"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

// cuBLAS, opened at the first CUDA matmul rather than linked: loading it (and cuBLASLt, which it
// pulls in) took 75 ms at every start of the binary, CPU runs included.
struct Blas {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSgemm_v2) sgemm = nullptr;
  // The C entry point (the header also declares a C++ overload for the legacy compute types).
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*, const void*, cudaDataType, int,
                            const void*, cudaDataType, int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t) = nullptr;
  decltype(&cublasGemmGroupedBatchedEx) grouped = nullptr;
  decltype(&cublasSgemmStridedBatched) strided = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

const Blas& blas(const Tensor& t) {
  static const std::string library = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
  static void* const handle = [] {
    void* h = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen(("/usr/local/cuda/lib64/" + library).c_str(), RTLD_NOW | RTLD_LOCAL);
    return h;
  }();
  static const std::string open_error = [] {
    const char* e = handle ? nullptr : dlerror();  // read once: a later dlerror() returns null
    return std::string(e ? e : "");
  }();
  SMELT_CHECK(handle, "op 'matmul' on ", t.device().str(), ": cannot open ", library, " (cuBLAS): ", open_error);
  static const Blas b = [] {
    Blas f;
    auto load = [](auto& fn, const char* name) { fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, name)); };
    load(f.create, "cublasCreate_v2");
    load(f.set_math_mode, "cublasSetMathMode");
    load(f.set_stream, "cublasSetStream_v2");
    load(f.sgemm, "cublasSgemm_v2");
    load(f.gemm_ex, "cublasGemmEx");
    load(f.grouped, "cublasGemmGroupedBatchedEx");
    load(f.strided, "cublasSgemmStridedBatched");
    load(f.status_string, "cublasGetStatusString");
    return f;
  }();
  SMELT_CHECK(b.create && b.set_math_mode && b.set_stream && b.sgemm && b.gemm_ex && b.strided && b.status_string, "op 'matmul' on ", t.device().str(), ": ",
              library, " lacks a cuBLAS entry point smelt calls");
  return b;
}

void check_blas(cublasStatus_t status, const Tensor& t, const char* call) {
  SMELT_CHECK(status == CUBLAS_STATUS_SUCCESS, "op 'matmul' on ", t.device().str(), ": ", call, " failed: ", blas(t).status_string(status));
}

// The cuBLAS handle of t's GPU (made on first use, after cuda_stream made that GPU current),
// bound to its compute stream.
cublasHandle_t blas_handle(const Tensor& t) {
  static std::mutex mu;
  static std::map<int, cublasHandle_t> handles;
  const Blas& f = blas(t);
  const cudaStream_t stream = cuda_stream(t);
  std::lock_guard<std::mutex> lock(mu);
  cublasHandle_t& h = handles[t.device().index];
  if (!h) {
    check_blas(f.create(&h), t, "cublasCreate");
    check_blas(f.set_math_mode(h, CUBLAS_DEFAULT_MATH), t, "cublasSetMathMode");
  }
  check_blas(f.set_stream(h, stream), t, "cublasSetStream");
  return h;
}

int blas_int(int64_t v, const Tensor& t) {
  SMELT_CHECK(v <= INT_MAX, "op 'matmul' on ", t.device().str(), ": dimension ", v, " exceeds cuBLAS's int");
  return static_cast<int>(v);
}

// dst [rows, cols] (packed) = src's rows (ld apart) rounded to bf16, to nearest even as the CPU's
// GEMM rounds its operands (ops/cpu/gemm_operands-inl.h): the products are then exact in f32.
__global__ void round_to_bf16_kernel(const float* src, int64_t ld, int64_t rows, int64_t cols, uint16_t* dst) {
  SMELT_GRID_STRIDE(e, rows * cols) {
    const uint32_t u = __float_as_uint(src[(e / cols) * ld + e % cols]);
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;  // stays a quiet NaN (the carry could wrap it to ±0)
    dst[e] = static_cast<uint16_t>(nan ? (u >> 16) | 0x40u : (u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}

// op(X) of shape [r, c] stored with leading dimension ld, rounded into a packed bf16 copy.
Tensor bf16_copy(const Tensor& on, const float* x, int64_t ld, bool trans, int64_t r, int64_t c) {
  const int64_t rows = trans ? c : r, cols = trans ? r : c;
  Tensor out = Tensor::empty({rows, cols}, DType::BF16, on.device());
  round_to_bf16_kernel<<<cuda_grid_for(rows * cols), 256, 0, cuda_stream(on)>>>(x, ld, rows, cols, static_cast<uint16_t*>(out.device_data()));
  cuda_check_launch(on, "matmul");
  return out;
}

// The bf16 form of cuda_gemm (a recipe's "precision": "bf16"): both operands rounded to bf16,
// products and sums in f32 (cublasGemmEx, CUBLAS_COMPUTE_32F).
void gemm_bf16_operands(const Tensor& on, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, bool trans_a, const float* b,
                        int64_t ldb, bool trans_b, float* c, int64_t ldc, float beta) {
  const Tensor a16 = bf16_copy(on, a, lda, trans_a, m, k), b16 = bf16_copy(on, b, ldb, trans_b, k, n);
  const int64_t lda16 = trans_a ? m : k, ldb16 = trans_b ? k : n;
  const float one = 1.0f;
  check_blas(blas(on).gemm_ex(blas_handle(on), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, blas_int(n, on),
                              blas_int(m, on), blas_int(k, on), &one, b16.device_data(), CUDA_R_16BF, blas_int(ldb16, on), a16.device_data(),
                              CUDA_R_16BF, blas_int(lda16, on), &beta, c, CUDA_R_32F, blas_int(ldc, on), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             on, "cublasGemmEx");
}

}  // namespace

// Row-major C [m, n] = op(A) [m, k] · op(B) [k, n] (+ beta · C), as cuBLAS's column-major
// Cᵀ = op(B)ᵀ · op(A)ᵀ: a row-major matrix read column-major is its transpose, so each operand
// keeps its own flag.
void cuda_gemm(const Tensor& on, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, bool trans_a, const float* b, int64_t ldb,
               bool trans_b, float* c, int64_t ldc, float beta) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum (cuBLAS may leave C unwritten): C = beta · C for beta 0 or 1
    SMELT_CHECK(beta == 0.0f || beta == 1.0f, "cuda_gemm on ", on.device().str(), ": k = 0 with beta ", beta);
    if (beta == 0.0f)
      SMELT_CHECK(cudaMemset2DAsync(c, ldc * sizeof(float), 0, n * sizeof(float), m, cuda_stream(on)) == cudaSuccess, "cuda_gemm on ",
                  on.device().str(), ": clearing C failed");
    return;
  }
  if (matmuls_in_bf16()) {
    gemm_bf16_operands(on, m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, beta);
    return;
  }
  const float one = 1.0f;
  check_blas(blas(on).sgemm(blas_handle(on), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, blas_int(n, on),
                            blas_int(m, on), blas_int(k, on), &one, b, blas_int(std::max<int64_t>(ldb, 1), on), a,
                            blas_int(std::max<int64_t>(lda, 1), on), &beta, c, blas_int(ldc, on)),
             on, "cublasSgemm");
}

void cuda_matmul_op(const Tensor& a, const Tensor& b_in, const Tensor& out) {
  const Tensor b = cuda_f32_weight(b_in);
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  if (out.numel() == 0) return;
  if (K == 0) {  // an empty sum: zeros
    cuda_clear(out, "matmul");
    return;
  }
  const ops::MatrixLayout la = ops::matrix_layout(a), lb = ops::matrix_layout(b);
  if (b.dim() == 2 && !la.trans && a.is_contiguous()) {
    const int64_t batch_count = a.numel() / (M * K);  // the batch's matrices, stacked into one tall A
    cuda_gemm(out, batch_count * M, N, K, f32(a), K, false, f32(b), lb.ld, lb.trans, f32_out(out), N, 0.0f);
    return;
  }
  // The batch's element offsets: evenly spaced ones (any batch of a strided tensor, a shared b
  // at stride 0) make one strided-batched call in f32.
  std::vector<std::array<int64_t, 3>> at;
  ops::for_each_matmul_batch(a, b, out, [&](int64_t oa, int64_t ob, int64_t oo) { at.push_back({oa, ob, oo}); });
  bool even = at.size() > 1 && !matmuls_in_bf16();
  for (size_t i = 2; even && i < at.size(); ++i)
    for (int c = 0; c < 3; ++c) even = even && at[i][c] - at[i - 1][c] == at[1][c] - at[0][c];
  if (even) {
    const float one = 1.0f, zero = 0.0f;
    check_blas(blas(out).strided(blas_handle(out), lb.trans ? CUBLAS_OP_T : CUBLAS_OP_N, la.trans ? CUBLAS_OP_T : CUBLAS_OP_N, blas_int(N, out),
                                 blas_int(M, out), blas_int(K, out), &one, f32(b) + at[0][1], blas_int(lb.ld, out), at[1][1] - at[0][1],
                                 f32(a) + at[0][0], blas_int(la.ld, out), at[1][0] - at[0][0], &zero, f32_out(out) + at[0][2], blas_int(N, out),
                                 at[1][2] - at[0][2], blas_int(static_cast<int64_t>(at.size()), out)),
               out, "cublasSgemmStridedBatched");
    return;
  }
  for (const auto& [oa, ob, oo] : at)
    cuda_gemm(out, M, N, K, f32(a) + oa, la.ld, la.trans, f32(b) + ob, lb.ld, lb.trans, f32_out(out) + oo, N, 0.0f);
}

}  // namespace smelt

namespace smelt {

bool cuda_grouped_gemms() {
  static const bool grouped = [] {
    const char* v = std::getenv("SMELT_CUDA_GROUPED_GEMM");
    return v && std::string(v) == "1";
  }();
  return grouped;
}

void cuda_gemm_group(const Tensor& on, const std::vector<CudaGemm>& problems) {
  if (problems.empty()) return;
  // The loop: under bf16 precision (each problem rounds its own operands), by default, and for
  // empty products or sums (which cuda_gemm skips or turns into a clear).
  bool loop = !cuda_grouped_gemms() || matmuls_in_bf16();
  for (const CudaGemm& g : problems) loop = loop || g.k == 0 || g.m == 0 || g.n == 0;
  if (loop) {
    for (const CudaGemm& g : problems) cuda_gemm(on, g.m, g.n, g.k, g.a, g.lda, g.trans_a, g.b, g.ldb, g.trans_b, g.c, g.ldc, g.beta);
    return;
  }
  const Blas& f = blas(on);
  SMELT_CHECK(f.grouped, "op 'matmul' on ", on.device().str(), ": SMELT_CUDA_GROUPED_GEMM=1 but this cuBLAS has no cublasGemmGroupedBatchedEx");
  // Each problem a group of one, in cuBLAS's column-major terms (as cuda_gemm: B first, m and n
  // swapped). The per-group sizes stay on the host; the operand pointers go to the device.
  const size_t count = problems.size();
  std::vector<cublasOperation_t> op_b(count), op_a(count);
  std::vector<int> m(count), n(count), k(count), ldb(count), lda(count), ldc(count), one_each(count, 1);
  std::vector<float> alpha(count, 1.0f), beta(count);
  std::vector<const void*> pointers(3 * count);
  for (size_t i = 0; i < count; ++i) {
    const CudaGemm& g = problems[i];
    op_b[i] = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    op_a[i] = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    m[i] = blas_int(g.n, on);
    n[i] = blas_int(g.m, on);
    k[i] = blas_int(g.k, on);
    ldb[i] = blas_int(std::max<int64_t>(g.ldb, 1), on);
    lda[i] = blas_int(std::max<int64_t>(g.lda, 1), on);
    ldc[i] = blas_int(g.ldc, on);
    beta[i] = g.beta;
    pointers[i] = g.b;
    pointers[count + i] = g.a;
    pointers[2 * count + i] = g.c;
  }
  const Tensor table = Tensor::empty({static_cast<int64_t>(3 * count)}, DType::I64, on.device());
  const cudaError_t err =
      cudaMemcpyAsync(table.device_data(), pointers.data(), pointers.size() * sizeof(void*), cudaMemcpyHostToDevice, cuda_stream(on));
  SMELT_CHECK(err == cudaSuccess, "op 'matmul' on ", on.device().str(), ": uploading the grouped GEMM's pointers failed: ", cudaGetErrorString(err));
  const auto* ptr = static_cast<const void* const*>(table.device_data());
  check_blas(f.grouped(blas_handle(on), op_b.data(), op_a.data(), m.data(), n.data(), k.data(), alpha.data(), ptr, CUDA_R_32F, ldb.data(),
                       ptr + count, CUDA_R_32F, lda.data(), beta.data(), const_cast<void* const*>(ptr + 2 * count), CUDA_R_32F, ldc.data(),
                       static_cast<int>(count), one_each.data(), CUBLAS_COMPUTE_32F),
             on, "cublasGemmGroupedBatchedEx");
}

}  // namespace smelt
