# Excerpt (trimmed) of the training loop of pytorch/examples imagenet/main.py (an older
# revision, updated for Python 3: cuda(async=True) -> cuda(non_blocking=True)),
# https://github.com/pytorch/examples, BSD 3-Clause licence (c) PyTorch contributors.
# expect: no_cpu_fallback 21
# expect: gpu_checkpoint_on_cpu 30
# expect: torch_load_weights_only 30
# expect: pin_memory_without_accelerator 38
# expect: hidden_host_sync 52

import torch
import torch.nn as nn
import torch.utils.data
import torch.utils.data.distributed
import torchvision.models as models

def main():
    model = models.__dict__[args.arch]()
    if not args.distributed:
        if args.arch.startswith('alexnet') or args.arch.startswith('vgg'):
            model.features = torch.nn.DataParallel(model.features)
            model.cuda()
        else:
            model = torch.nn.DataParallel(model).cuda()
    else:
        model.cuda()
        model = torch.nn.parallel.DistributedDataParallel(model)
    criterion = nn.CrossEntropyLoss().cuda()
    optimizer = torch.optim.SGD(model.parameters(), args.lr)
    if args.resume:
        checkpoint = torch.load(args.resume)
        model.load_state_dict(checkpoint['state_dict'])
    if args.distributed:
        train_sampler = torch.utils.data.distributed.DistributedSampler(train_dataset)
    else:
        train_sampler = None
    train_loader = torch.utils.data.DataLoader(
        train_dataset, batch_size=args.batch_size, shuffle=(train_sampler is None),
        num_workers=args.workers, pin_memory=True, sampler=train_sampler)
    for epoch in range(args.start_epoch, args.epochs):
        if args.distributed:
            train_sampler.set_epoch(epoch)
        train(train_loader, model, criterion, optimizer, epoch)

def train(train_loader, model, criterion, optimizer, epoch):
    losses = AverageMeter()
    model.train()
    for i, (input, target) in enumerate(train_loader):
        target = target.cuda(non_blocking=True)
        output = model(input)
        loss = criterion(output, target)
        prec1, prec5 = accuracy(output, target, topk=(1, 5))
        losses.update(loss.item(), input.size(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i % args.print_freq == 0:
            print(losses)

class AverageMeter(object):
    def update(self, val, n=1):
        self.val = val

def accuracy(output, target, topk=(1,)):
    with torch.no_grad():
        maxk = max(topk)
        _, pred = output.topk(maxk, 1, True, True)
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return correct

if __name__ == '__main__':
    main()
