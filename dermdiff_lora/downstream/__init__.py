"""Downstream fairness: per-skin-tone-group metrics of a lesion classifier, and patient-level splits.

Import from the modules (nothing is imported here, so ``import dermdiff_lora`` stays light):

- ``fairness``: ``choose_threshold``, ``fairness_report`` (binary, malignant vs benign, fairlearn gaps)
- ``multiclass``: ``multiclass_report`` (one-vs-rest AUC and balanced accuracy per group)
- ``predictions``: ``fairness_from_csv``, ``multiclass_from_csv`` (any classifier's predictions CSV)
- ``tables``: ``format_table``, ``compare_table``;  ``chart``: ``save_chart``
- ``data.splits`` (a data concept, read by training too): ``make_splits``, ``read_split_file``, ``check_no_leak``
- ``bootstrap``: the seeded percentile bootstrap behind every interval
- ``classifier``: ``load_classifier(ClassifierSpec, classes)`` -> ``fit(paths, labels, seed)`` ->
  ``predict_proba(paths)``; kinds ``probe`` (module ``probe``), ``resnet`` and ``timm`` (``finetune``)
- ``command``: ``downstream(DownstreamOptions)``, the arms (``arms``: real, real+resample, real+lab,
  real+synthetic) on one split file (``samples`` reads the images, ``study`` runs every arm and seed,
  ``runs`` trains and reports one, ``seeds`` averages, ``paired`` bootstraps each arm's difference from
  real, ``flips`` the counterfactual flip rates, ``arm_tables`` writes the text)
- ``samples.split_dataset``: the split file of a dataset folder (``dermdiff-lora split``)
"""
