"""Meeting Argo Rollouts users where they are: their canary steps, AnalysisTemplates and Rollout manifests,
carried over into aicd's vocabulary where aicd has an equivalent and refused by name where it has none.

- `promql`: adds the label that tells canary from stable to every selector of an Argo PromQL query;
- `conditions`: reads a metric's `successCondition`/`failureCondition` as the absolute limits aicd's judge
  checks (`min`/`max`), or says why it cannot;
- `templates`: reads AnalysisTemplate/ClusterAnalysisTemplate files and translates the Prometheus metrics an
  `analysis: {templates: [...]}` step names into aicd metrics, saying what the judge does instead of each
  condition;
- `importer`: `aicd import argo-rollout`, a Rollout's canary strategy as an aicd stage.

Domain code only: nothing here imports workflows or activities."""
