// step_stats.cuh: the layout of a training loop's step statistics, a float array of
// STAT_COUNT entries on the device that softmax_ce.cu's train_stats updates after
// every loss and the optimizer kernels read as their guard. The host reads it every
// few steps (at most STAT_RING apart), never inside a step; it adds the losses up
// itself, step by step, so the sums do not depend on when it reads
// (tinycnn/backends/contract.py: STAT_LAYOUT, step_stats_update).
#pragma once

#define STAT_STEPS 0      // steps counted since the statistics were (re)set
#define STAT_FIRST_BAD 1  // the index (in STAT_STEPS) of the first step with a non-finite loss, or -1
#define STAT_BAD_LOSS 2   // that step's loss
#define STAT_LOSSES 3     // STAT_RING entries: the loss of step i at STAT_LOSSES + i % STAT_RING
#define STAT_CORRECT 67   // STAT_RING entries: its correct predictions (STAT_LOSSES + STAT_RING)
#define STAT_RING 64
#define STAT_COUNT 131    // STAT_CORRECT + STAT_RING
