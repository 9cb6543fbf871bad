"""scoresde: score-based generative modelling with SDEs on JAX."""

from . import (
    analytic as analytic,
    bench as bench,
    data as data,
    guidance as guidance,
    interop as interop,
    inverse as inverse,
    langevin as langevin,
    metrics as metrics,
)
from ._data import (
    ImageData as ImageData,
    batches as batches,
    checkerboard as checkerboard,
    dequantize as dequantize,
    digit_images as digit_images,
    digit_levels as digit_levels,
    gaussian_mixture as gaussian_mixture,
    load_coloured_digits as load_coloured_digits,
    load_digits as load_digits,
    load_mnist as load_mnist,
    quantize as quantize,
    rings as rings,
    swiss_roll as swiss_roll,
    toy_mixture as toy_mixture,
    two_moons as two_moons,
)
from ._grid import (
    AbstractExplicitGrid as AbstractExplicitGrid,
    AbstractTimeGrid as AbstractTimeGrid,
    ClippedLogSNRGrid as ClippedLogSNRGrid,
    KarrasGrid as KarrasGrid,
    LogSNRGrid as LogSNRGrid,
    UniformGrid as UniformGrid,
    clipped_log_snr_grid as clipped_log_snr_grid,
    time_grid as time_grid,
)
from ._inverse.measurement import (
    AbstractMeasurement as AbstractMeasurement,
    LinearMeasurement as LinearMeasurement,
)
from ._inverse.smc import (
    AbstractTwist as AbstractTwist,
    LogTwist as LogTwist,
    MomentTwist as MomentTwist,
    SMCResult as SMCResult,
    TweedieTwist as TweedieTwist,
    sample_smc as sample_smc,
)
from ._langevin.kernels import (
    MALA as MALA,
    AbstractFixedCostKernel as AbstractFixedCostKernel,
    AbstractLangevinKernel as AbstractLangevinKernel,
    AbstractStepSizeKernel as AbstractStepSizeKernel,
    AnnealedLangevin as AnnealedLangevin,
    AnnealedLangevinState as AnnealedLangevinState,
    LangevinInfo as LangevinInfo,
    LangevinResult as LangevinResult,
    LangevinState as LangevinState,
    MALAState as MALAState,
    UnadjustedLangevin as UnadjustedLangevin,
    annealed_langevin as annealed_langevin,
    run_langevin as run_langevin,
)
from ._langevin.lanczos import (
    AbstractCurvaturePoints as AbstractCurvaturePoints,
    LanczosCurvature as LanczosCurvature,
    PilotMean as PilotMean,
    PilotPoints as PilotPoints,
    lanczos_curvature as lanczos_curvature,
    lanczos_per_level as lanczos_per_level,
)
from ._langevin.metric_estimators import (
    AbstractMetricEstimator as AbstractMetricEstimator,
    CovarianceEstimator as CovarianceEstimator,
    FisherDivergenceEstimator as FisherDivergenceEstimator,
    FisherEstimator as FisherEstimator,
    LanczosEstimator as LanczosEstimator,
    estimate_preconditioner as estimate_preconditioner,
)
from ._langevin.ozaki import OzakiLangevin as OzakiLangevin, OzakiState as OzakiState
from ._langevin.preconditioners import (
    AbstractPreconditioner as AbstractPreconditioner,
    DensePreconditioner as DensePreconditioner,
    DiagonalPreconditioner as DiagonalPreconditioner,
    IdentityPreconditioner as IdentityPreconditioner,
    LowRankPreconditioner as LowRankPreconditioner,
)
from ._langevin.step_size_adaptation import (
    StepSizeAdaptation as StepSizeAdaptation,
    adapt_step_size as adapt_step_size,
)
from ._likelihood.batching import (
    AbstractSchedule as AbstractSchedule,
    Lanes as Lanes,
    PerSample as PerSample,
    SharedSteps as SharedSteps,
)
from ._likelihood.bits_per_dim import (
    AbstractDequantization as AbstractDequantization,
    AntitheticDequantization as AntitheticDequantization,
    NoDequantization as NoDequantization,
    UniformDequantization as UniformDequantization,
)
from ._likelihood.certified import (
    BitsPerDimEstimate as BitsPerDimEstimate,
    MeanLogLikelihood as MeanLogLikelihood,
    estimate_bits_per_dim as estimate_bits_per_dim,
    estimate_mean_log_likelihood as estimate_mean_log_likelihood,
)
from ._likelihood.divergence import (
    AbstractDivergence as AbstractDivergence,
    AbstractProbeDistribution as AbstractProbeDistribution,
    EigenHutchinson as EigenHutchinson,
    ExactDivergence as ExactDivergence,
    GaussianProbes as GaussianProbes,
    Hutchinson as Hutchinson,
    RademacherProbes as RademacherProbes,
)
from ._likelihood.flow import (
    BitsPerDimResult as BitsPerDimResult,
    EncodeResult as EncodeResult,
    LikelihoodResult as LikelihoodResult,
    bits_per_dim as bits_per_dim,
    decode as decode,
    encode as encode,
    log_likelihood as log_likelihood,
)
from ._likelihood.integration_variable import (
    AbstractIntegrationVariable as AbstractIntegrationVariable,
    LogSigmaVariable as LogSigmaVariable,
    LogSNRVariable as LogSNRVariable,
    TimeVariable as TimeVariable,
)
from ._likelihood.solver_level import SolverLevel as SolverLevel
from ._metrics.digits import (
    DigitClassifier as DigitClassifier,
    DigitMetrics as DigitMetrics,
    digit_metrics as digit_metrics,
    frechet_distance as frechet_distance,
)
from ._metrics.sample_distances import (
    median_bandwidth as median_bandwidth,
    mmd2 as mmd2,
    mode_weight_error as mode_weight_error,
    mode_weights as mode_weights,
    sliced_wasserstein as sliced_wasserstein,
)
from ._networks import (
    GaussianFourierFeatures as GaussianFourierFeatures,
    MLPScoreNet as MLPScoreNet,
    UNet as UNet,
)
from ._nfe import AbstractCountedSolver as AbstractCountedSolver
from ._parametrisation import (
    AbstractParametrisation as AbstractParametrisation,
    DirectScore as DirectScore,
    EDMPreconditioning as EDMPreconditioning,
    EnergyScore as EnergyScore,
    EpsPrediction as EpsPrediction,
    VPrediction as VPrediction,
    X0Prediction as X0Prediction,
)
from ._sampling.adaptive_sde import sample_sde_adaptive as sample_sde_adaptive
from ._sampling.brownian import BatchBrownianPath as BatchBrownianPath
from ._sampling.predictor_corrector import (
    AbstractCorrector as AbstractCorrector,
    AbstractPreconditionedCorrector as AbstractPreconditionedCorrector,
    AbstractPredictor as AbstractPredictor,
    Ancestral as Ancestral,
    AnnealedLangevinCorrector as AnnealedLangevinCorrector,
    EulerMaruyama as EulerMaruyama,
    LangevinCorrector as LangevinCorrector,
    ReverseDiffusion as ReverseDiffusion,
    sample_pc as sample_pc,
)
from ._sampling.sample import (
    EDMResult as EDMResult,
    SampleResult as SampleResult,
    sample_edm as sample_edm,
    sample_ode as sample_ode,
    sample_sde as sample_sde,
)
from ._sde import (
    DDPMSDE as DDPMSDE,
    EDMSDE as EDMSDE,
    VESDE as VESDE,
    VPSDE as VPSDE,
    AbstractSDE as AbstractSDE,
    CosineVPSDE as CosineVPSDE,
    CustomVPSDE as CustomVPSDE,
    SubVPSDE as SubVPSDE,
)
from ._solver import (
    DDIM as DDIM,
    AbstractPFSolver as AbstractPFSolver,
    DPMSolver1 as DPMSolver1,
    DPMSolver2 as DPMSolver2,
    DPMSolver3 as DPMSolver3,
    DPMSolverPP2M as DPMSolverPP2M,
    DPMSolverPP3M as DPMSolverPP3M,
    EDMHeun as EDMHeun,
    UniPC as UniPC,
)
from ._terms import (
    forward_terms as forward_terms,
    probability_flow_term as probability_flow_term,
    reverse_terms as reverse_terms,
)
from ._training.checkpoint import (
    CheckpointError as CheckpointError,
    load as load,
    read_sidecar as read_sidecar,
    save as save,
)
from ._training.conditional import (
    LabelDropoutDSM as LabelDropoutDSM,
    NoisyCrossEntropy as NoisyCrossEntropy,
    UnpackLabels as UnpackLabels,
    pack_labels as pack_labels,
)
from ._training.fit import (
    FitResult as FitResult,
    TrainState as TrainState,
    adam_with_warmup as adam_with_warmup,
    fit as fit,
    num_params as num_params,
    train_toy2d as train_toy2d,
)
from ._training.losses import (
    AbstractProjection as AbstractProjection,
    AbstractTimeSampler as AbstractTimeSampler,
    AbstractWeighting as AbstractWeighting,
    DenoisingScoreMatching as DenoisingScoreMatching,
    EDMTime as EDMTime,
    EDMWeighting as EDMWeighting,
    GaussianProjection as GaussianProjection,
    ImportanceTime as ImportanceTime,
    LikelihoodWeighting as LikelihoodWeighting,
    NCSNLoss as NCSNLoss,
    RademacherProjection as RademacherProjection,
    SigmaSquared as SigmaSquared,
    SphereProjection as SphereProjection,
    UniformTime as UniformTime,
    dsm_loss as dsm_loss,
    explicit_score_matching_loss as explicit_score_matching_loss,
    geometric_sigmas as geometric_sigmas,
    implicit_score_matching_loss as implicit_score_matching_loss,
    ncsn_loss as ncsn_loss,
    sliced_score_matching_loss as sliced_score_matching_loss,
)
from ._training.trained import (
    Trained as Trained,
    load_checkpoint as load_checkpoint,
)
from ._tuning.likelihood_grid import tune_likelihood_grid as tune_likelihood_grid
from ._tuning.likelihood_schedule import (
    ScheduleChoice as ScheduleChoice,
    choose_schedule as choose_schedule,
)
from ._tuning.sde_grid import tune_sde_grid as tune_sde_grid
from ._tuning.time_grid import TimeGrid as TimeGrid
from ._tuning.tune_grid import tune_grid as tune_grid
from ._tuning.tune_sampler import (
    TunedSampler as TunedSampler,
    tune_sampler as tune_sampler,
)
from ._version import __version__ as __version__
