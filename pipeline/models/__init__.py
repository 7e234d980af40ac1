"""Networks: IResNet backbones, multi-task heads, the TDNN audio model and the sequence model."""
