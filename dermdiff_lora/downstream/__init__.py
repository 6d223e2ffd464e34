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
- ``command``: ``downstream(DownstreamOptions)``, real only vs real + synthetic on one split file
  (``samples`` reads the images, ``runs`` trains and reports one arm and seed, ``seeds`` averages)
- ``samples.split_dataset``: the split file of a dataset folder (``dermdiff-lora split``)
"""
