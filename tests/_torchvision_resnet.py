"""torchvision's ResNet state_dict layout, for tests that hold ipmix's ResNet-50 against it."""


def torchvision_resnet_state_shapes(layers, expansion, num_classes):
    """(key, shape) of every state_dict entry of torchvision's ResNet, in order, written out from
    the definition in pytorch/vision's torchvision/models/resnet.py (torchvision cannot be
    imported beside the CPU torch here): conv1 7x7/2 (64) + bn1, then layer1..layer4 of
    Bottleneck blocks (conv1 1x1, bn1, conv2 3x3, bn2, conv3 1x1 to planes*4, bn3, and on the
    first block of a layer downsample.0 1x1 conv + downsample.1 BN), then fc."""
    def bn(prefix, c):
        return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,)), (f"{prefix}.running_mean", (c,)),
                (f"{prefix}.running_var", (c,)), (f"{prefix}.num_batches_tracked", ())]

    table = [("conv1.weight", (64, 3, 7, 7)), *bn("bn1", 64)]
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        for j in range(blocks):
            b = f"layer{i + 1}.{j}"
            table += [(f"{b}.conv1.weight", (planes, inplanes, 1, 1)), *bn(f"{b}.bn1", planes),
                      (f"{b}.conv2.weight", (planes, planes, 3, 3)), *bn(f"{b}.bn2", planes),
                      (f"{b}.conv3.weight", (planes * expansion, planes, 1, 1)), *bn(f"{b}.bn3", planes * expansion)]
            if j == 0:  # stride 2 (layers 2-4) or a channel change: a projection shortcut
                table += [(f"{b}.downsample.0.weight", (planes * expansion, inplanes, 1, 1)),
                          *bn(f"{b}.downsample.1", planes * expansion)]
            inplanes = planes * expansion
    return table + [("fc.weight", (num_classes, 512 * expansion)), ("fc.bias", (num_classes,))]
