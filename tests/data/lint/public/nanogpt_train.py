# Excerpt (trimmed) of a train.py in the style of karpathy/nanoGPT (Trainer-class fork),
# https://github.com/karpathy/nanoGPT, MIT licence (c) 2022 Andrej Karpathy.
# .item() in the while-True training loop sits under the log_interval guard; estimate_loss has
# no backward(); only the checkpoint load lacks weights_only=True.
# expect: torch_load_weights_only 22

import torch
import numpy as np
from contextlib import nullcontext
from torch.nn.parallel import DistributedDataParallel as DDP
from model import GPTConfig, GPT

class Trainer:
    def setup(self):
        parser_default = 'float16' if torch.cuda.is_available() else 'float16'
        if self.ddp:
            self.device = f'cuda:{self.ddp_local_rank}'
            torch.cuda.set_device(self.device)
        self.device_type = 'cuda' if 'cuda' in self.args.device else 'cpu'
        self.ctx = nullcontext() if self.device_type == 'cpu' else torch.amp.autocast(device_type=self.device_type, dtype=self.ptdtype)
        if self.args.init_from == 'resume':
            checkpoint = torch.load(ckpt_path, map_location=self.device)
            self.model = GPT(gptconf)
            self.model.load_state_dict(checkpoint['model'])
        self.model.to(self.device)
        self.scaler = torch.cuda.amp.GradScaler(enabled=(self.args.dtype == 'float16'))
        self.optimizer = self.model.configure_optimizers(1, 2, (3, 4), self.device_type)
        if self.args.compile:
            self.model = torch.compile(self.model)
        if self.ddp:
            self.model = DDP(self.model, device_ids=[self.ddp_local_rank])

    def get_batch(self, split):
        data = self.train_data if split == 'train' else self.val_data
        ix = torch.randint(len(data) - self.args.block_size, (self.args.batch_size,))
        x = torch.stack([torch.from_numpy((data[i:i+self.args.block_size]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i+1:i+1+self.args.block_size]).astype(np.int64)) for i in ix])
        if self.device_type == 'cuda':
            x, y = x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        else:
            x, y = x.to(self.device), y.to(self.device)
        return x, y

    @torch.no_grad()
    def estimate_loss(self):
        out = {}
        self.model.eval()
        for split in ['train', 'val']:
            losses = torch.zeros(self.args.eval_iters)
            for k in range(self.args.eval_iters):
                X, Y = self.get_batch(split)
                with self.ctx:
                    logits, loss = self.model(X, Y)
                losses[k] = loss.item()
            out[split] = losses.mean()
        self.model.train()
        return out

    def train(self):
        self.X, self.Y = self.get_batch('train')
        while True:
            if self.iter_num % self.args.eval_interval == 0 and self.master_process:
                losses = self.estimate_loss()
                if losses['val'] < self.best_val_loss or self.args.always_save_checkpoint:
                    self.best_val_loss = losses['val']
            for micro_step in range(self.args.gradient_accumulation_steps):
                with self.ctx:
                    logits, loss = self.model(self.X, self.Y)
                    loss = loss / self.args.gradient_accumulation_steps
                self.X, self.Y = self.get_batch('train')
                self.scaler.scale(loss).backward()
            if self.args.grad_clip != 0.0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.iter_num % self.args.log_interval == 0 and self.master_process:
                lossf = loss.item() * self.args.gradient_accumulation_steps
            self.iter_num += 1
            if self.iter_num > self.args.max_iters:
                break

def main():
    trainer = Trainer(args)
    trainer.train()

if __name__ == '__main__':
    main()
