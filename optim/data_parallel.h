// Data parallelism over the ranks of a job (runtime/communicator.h). A step's global batch is the
// recipe's batch_size × grad_accum whatever the number of ranks: the step's grad_accum
// micro-batches are dealt out in whole, contiguous runs (rank r takes micro-batches
// [r·A/N, (r+1)·A/N)), every rank draws every micro-batch from the shared data stream (so the
// stream, and a checkpoint's record of it, is the single-process one) and keeps its own. Each
// micro-batch then sees exactly what it would in a single process (its loss, its MoE routing and
// balancing statistics), and the summed gradients differ from the single-process ones only in
// the order of the sum.
#pragma once
#include <string>
#include <vector>

#include "models/transformer.h"
#include "optim/optimizer.h"
#include "runtime/communicator.h"
#include "runtime/tensor.h"
#include "runtime/tensor_collectives.h"

namespace smelt {

// The micro-batches [begin, end) of one step that `rank` of `ranks` computes.
struct MicroBatchRange {
  int64_t begin = 0, end = 0;
  bool contains(int64_t micro) const { return micro >= begin && micro < end; }
  int64_t size() const { return end - begin; }
};
MicroBatchRange micro_batches_of_rank(int64_t grad_accum, int rank, int ranks);

// How a step's global batch is shared out over `ranks`: whole micro-batches when the ranks
// divide grad_accum (every micro-batch computed as one process computes it: exact), else the
// rows of every micro-batch when they divide batch_size (each rank's loss weighted by its share
// of the micro-batch's loss-carrying tokens, so the cross-entropy is the one-process one; an MoE
// balancing loss is then taken per rank's rows). Neither: an error saying what to change.
enum class BatchSplit { MicroBatches, Rows };
BatchSplit batch_split(int64_t batch_size, int64_t grad_accum, int ranks);

// Sums the parameters' gradients over the ranks in place (buckets of at most `bucket_floats`
// values through one host buffer). A parameter that has a gradient on some rank gets one on
// every rank (zeros where it had none); one with a gradient nowhere keeps none, as in a single
// process.
void all_reduce_gradients(const std::vector<Tensor>& params, Communicator& comm, int64_t bucket_floats = kDefaultBucketFloats);

// Every rank's copy of the parameters equals rank 0's (after a checkpoint is loaded on rank 0
// only, or as a start-of-run guard). One broadcast per bucket.
void broadcast_parameters(const std::vector<Tensor>& params, Communicator& comm, int root = 0, int64_t bucket_floats = kDefaultBucketFloats);

// The optimizer state with each expert-sharded parameter's state (named "<kind>.<parameter>")
// gathered from the model's expert group into the unsharded shape, so that a checkpoint is the
// same whatever the world size. A collective; the state itself when nothing is sharded.
OptimizerState with_all_experts(const OptimizerState& state, const Transformer& model);

}  // namespace smelt
